"""export-schedule: a beat_schedule as a sqsbeat schedule file, and sqsbeat's
reading of it against Celery's own crontab."""

import json
import subprocess
import sys
import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab

import beatschedule

HERE = Path(__file__).resolve().parent

EXPECTED = '''\
# sqsbeat schedule exported from Celery's beat_schedule of beatschedule:app.
# crontab tables keep Celery's crontab() meaning; `every` counts from the Unix
# epoch instead of from the previous run (see README "Coming from Celery beat").

[defaults]
timezone = "America/Sao_Paulo"

[entries.quarter-hourly]
task = "reports.tasks.tick"
crontab = { minute = "*/15" }
kwargs = { batch = 100, dry_run = false, tags = ["a", "b"], ratio = 0.5 }

[entries.weekday-mornings]
task = "reports.tasks.daily"
crontab = { minute = "0", hour = "7", day_of_week = "mon-fri" }
args = ["daily", 3]
queue = "reports"
priority = 5
expires = "4m"
headers = { x-team = "reports" }

[entries.weekend-names]
task = "t.weekend"
crontab = { minute = "30", hour = "9,18", day_of_week = "sat,sun" }

[entries.wraps-around]
task = "t.night"
crontab = { minute = "0", hour = "0-2,22,23", day_of_week = "0,1,5,6" }

[entries.first-and-third-mondays]
task = "t.fortnight"
crontab = { minute = "0", hour = "6", day_of_week = "1", day_of_month = "1-7,15-21" }

[entries.quarterly]
task = "t.quarter"
crontab = { minute = "0", hour = "0", day_of_month = "1", month_of_year = "*/3" }

[entries.from-sets]
task = "t.sets"
crontab = { minute = "5,35", hour = "8-10" }

[entries.office-hours]
task = "t.office"
crontab = { minute = "0,30", hour = "8-17/2", month_of_year = "jan-jun" }

[entries.every-30-seconds]
task = "t.heartbeat"
every = "30s"

[entries.every-90-minutes]
task = "t.sync"
every = "1h30m"
queue = "jobs.fifo"
group_id = "sync"

[entries.run-every-6h]
task = "t.cleanup"
every = "6h"
expires = "30m"

[entries."odd name.with dots"]
task = "t.odd"
crontab = { minute = "0", hour = "0" }
'''


def export(target, *extra):
    return subprocess.run([sys.executable, "-m", "sqsbeat_celery", "export-schedule", target, *extra],
                          cwd=HERE, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = export("beatschedule:app")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    path = tmp_path_factory.mktemp("export") / "schedule.toml"
    path.write_text(out.stdout)
    return path


def test_a_representative_beat_schedule(exported):
    assert exported.read_text() == EXPECTED
    parsed = tomllib.loads(EXPECTED)
    assert set(parsed["entries"]) == set(beatschedule.app.conf.beat_schedule)


def test_entries_without_an_equivalent_are_reported_and_the_rest_printed(tmp_path):
    out = export("badschedule:app", "--output", str(tmp_path / "out.toml"))
    assert out.returncode == 1
    assert out.stdout == ""
    written = tomllib.loads((tmp_path / "out.toml").read_text())
    assert list(written["entries"]) == ["fine"]
    assert written["defaults"] == {"timezone": "Europe/Berlin"}
    reasons = {line.split("'")[1]: line for line in out.stderr.splitlines() if "entry '" in line}
    assert set(reasons) == {"at-sunset", "relative-entry", "relative-schedule", "datetime-arg",
                            "null-kwarg", "unknown-option", "absolute-expiry"}
    assert "solar" in reasons["at-sunset"]
    assert "relative=True" in reasons["relative-entry"]
    assert "relative=True" in reasons["relative-schedule"]
    assert "is not JSON" in reasons["datetime-arg"]
    assert "null" in reasons["null-kwarg"]
    assert "options.countdown" in reasons["unknown-option"]
    assert "absolute datetime" in reasons["absolute-expiry"]
    assert out.stderr.splitlines()[-1] == \
        "export-schedule: exported 1 entry; 7 left out, see the reasons above"


def test_an_app_that_cannot_be_loaded_is_a_usage_error():
    out = export("no_such_module:app")
    assert out.returncode == 2
    assert "cannot load the Celery app 'no_such_module:app'" in out.stderr


def test_sqsbeat_accepts_the_exported_file(exported, sqsbeat_bin):
    out = subprocess.run([sqsbeat_bin, "check", str(exported)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ok: 12 entries" in out.stdout


# Celery's reading of a crontab, two ways.

def celery_walk(c, app, after, count):
    """Celery's own next-fire computation: with the clock at the previous
    fire, remaining_estimate() is the time to the next one."""
    c.app = app
    t, fires = after.astimezone(app.timezone), []
    for _ in range(count):
        c.nowfun = lambda t=t: t
        t = t + c.remaining_estimate(t)
        fires.append(t)
    return fires


def celery_matches(c, local):
    return (local.minute in c.minute and local.hour in c.hour
            and local.isoweekday() % 7 in c.day_of_week and local.day in c.day_of_month
            and local.month in c.month_of_year)


def field_walk(c, tz, after, count):
    """Every minute after `after` whose fields are in Celery's expanded sets
    (days that match nothing are skipped whole)."""
    local = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
    fires = []
    day = local.replace(hour=0, minute=0)
    while len(fires) < count:
        probe = day.replace(hour=0, minute=0)
        if (probe.isoweekday() % 7 in c.day_of_week and probe.day in c.day_of_month
                and probe.month in c.month_of_year):
            for h in sorted(c.hour):
                for m in sorted(c.minute):
                    t = day.replace(hour=h, minute=m)
                    if t > local and len(fires) < count:
                        fires.append(t.replace(tzinfo=tz))
        day += timedelta(days=1)
    return fires


COUNT = 25
# São Paulo has kept standard time all year since 2019: the window has no
# DST transition, so wall time and instants map one to one.
AFTER = datetime(2027, 1, 1, 0, 0, tzinfo=ZoneInfo("America/Sao_Paulo"))


def test_sqsbeat_fires_crontab_entries_when_celery_does(exported, sqsbeat_bin):
    app = beatschedule.app
    out = subprocess.run([sqsbeat_bin, "next", str(exported), "--output", "json", "--count",
                          str(COUNT), "--after", AFTER.isoformat()],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    fires = {}
    for line in out.stdout.splitlines():
        row = json.loads(line)
        fires.setdefault(row["entry"], []).append(
            datetime.fromisoformat(row["fire_at"].replace("Z", "+00:00")))
    tz = ZoneInfo(app.conf.timezone)
    compared = 0
    for name, entry in app.conf.beat_schedule.items():
        c = entry["schedule"]
        if not isinstance(c, crontab):
            continue
        celery = celery_walk(c, app, AFTER, COUNT)
        assert all(celery_matches(c, t.astimezone(tz)) for t in celery), name
        assert celery == field_walk(c, tz, AFTER, COUNT), name
        assert fires[name] == celery, name
        compared += 1
    assert compared == 9


def test_sqsbeat_fires_intervals_on_the_epoch_grid(exported, sqsbeat_bin):
    out = subprocess.run([sqsbeat_bin, "next", str(exported), "--output", "json", "--count", "5",
                          "--after", AFTER.isoformat()], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    steps = {"every-30-seconds": 30, "every-90-minutes": 5400, "run-every-6h": 21600}
    got = {}
    for line in out.stdout.splitlines():
        row = json.loads(line)
        if row["entry"] in steps:
            got.setdefault(row["entry"], []).append(
                datetime.fromisoformat(row["fire_at"].replace("Z", "+00:00")).timestamp())
    for name, step in steps.items():
        first = (AFTER.timestamp() // step + 1) * step
        assert got[name] == [first + i * step for i in range(5)], name
