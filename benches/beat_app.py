"""Celery beat under benchmark: the schedule comes from bench.py's JSON.

Loaded as `celery -A beat_app beat` with benches/ on PYTHONPATH. Adds
nothing to beat's per-tick path except what measuring needs:

- `Scheduler.apply_async` is wrapped to note each fire's due instant as beat
  itself computes it (`now + remaining_estimate(last_run_at)` before the
  entry is advanced), and a `before_task_publish` handler copies it into the
  message headers `x_scheduled_at` (unix seconds) and `x_entry`;
- the end of the first tick is appended to $BENCH_MARKS as
  {"mark": "first_tick", "t": unix}, the start-up point.

Environment: BENCH_SCHEDULE (JSON from bench.py), BENCH_MARKS, BENCH_SQS_PORT.
"""

import json
import os
import time
from datetime import datetime, timedelta, timezone

from celery import Celery, beat, signals
from celery.schedules import crontab, schedule

app = Celery("bench", broker=f"sqs://bench:bench@127.0.0.1:{os.environ['BENCH_SQS_PORT']}")
app.conf.broker_transport_options = {"is_secure": False, "region": "us-east-1"}
app.conf.timezone = "UTC"
app.conf.enable_utc = True


def _beat_schedule(path):
    now = time.time()
    out = {}
    for e in json.load(open(path)):
        entry = {
            "task": e["task"],
            "kwargs": {"entry": e["name"]},
            "options": {"queue": e["queue"]},
        }
        if "cron" in e:
            minute, hour, dom, month, dow = e["cron"].split()
            entry["schedule"] = crontab(minute, hour, dom, month, dow)
        else:
            every, phase = e["every_s"], e.get("phase_s", 0.0)
            entry["schedule"] = schedule(timedelta(seconds=every))
            # The previous grid point, so the first fire lands on the
            # entry's phase, as sqsbeat's `anchor` does.
            k = (now - phase) // every
            last = phase + k * every
            entry["last_run_at"] = datetime.fromtimestamp(last, timezone.utc)
        out[e["name"]] = entry
    return out


app.conf.beat_schedule = _beat_schedule(os.environ["BENCH_SCHEDULE"])

_due = {}


def _mark(name):
    with open(os.environ["BENCH_MARKS"], "a") as f:
        f.write(json.dumps({"mark": name, "t": time.time()}) + "\n")


_orig_apply_async = beat.Scheduler.apply_async


def _apply_async(self, entry, producer=None, advance=True, **kwargs):
    due = entry.default_now() + timedelta(
        seconds=entry.schedule.remaining_estimate(entry.last_run_at).total_seconds()
    )
    _due["x_scheduled_at"] = due.timestamp()
    _due["x_entry"] = entry.name
    return _orig_apply_async(self, entry, producer=producer, advance=advance, **kwargs)


beat.Scheduler.apply_async = _apply_async

_orig_tick = beat.Scheduler.tick


def _first_tick(self, *args, **kwargs):
    r = _orig_tick(self, *args, **kwargs)
    beat.Scheduler.tick = _orig_tick
    _mark("first_tick")
    return r


beat.Scheduler.tick = _first_tick


@signals.before_task_publish.connect
def _stamp(headers=None, **_):
    if headers is not None and _due:
        headers.update(_due)
        _due.clear()
