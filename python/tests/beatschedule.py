"""A representative beat_schedule for the export tests (every kind sqsbeat can carry)."""

from datetime import timedelta

from celery import Celery
from celery.schedules import crontab, schedule

app = Celery("beatschedule", set_as_current=False)
app.conf.timezone = "America/Sao_Paulo"
app.conf.beat_schedule = {
    "quarter-hourly": {
        "task": "reports.tasks.tick",
        "schedule": crontab(minute="*/15"),
        "kwargs": {"batch": 100, "dry_run": False, "tags": ["a", "b"], "ratio": 0.5},
    },
    "weekday-mornings": {
        "task": "reports.tasks.daily",
        "schedule": crontab(minute=0, hour=7, day_of_week="mon-fri"),
        "args": ("daily", 3),
        "options": {"queue": "reports", "priority": 5, "expires": 240,
                    "headers": {"x-team": "reports"}},
    },
    "weekend-names": {
        "task": "t.weekend",
        "schedule": crontab(minute="30", hour="9,18", day_of_week="sat,Sunday"),
    },
    "wraps-around": {
        "task": "t.night",
        "schedule": crontab(minute="0", hour="22-2", day_of_week="fri-mon"),
    },
    "first-and-third-mondays": {
        "task": "t.fortnight",
        "schedule": crontab(minute=0, hour=6, day_of_week=1, day_of_month="1-7,15-21"),
    },
    "quarterly": {
        "task": "t.quarter",
        "schedule": crontab(minute=0, hour=0, day_of_month=1, month_of_year="*/3"),
    },
    "from-sets": {
        "task": "t.sets",
        "schedule": crontab(minute={5, 35}, hour=[8, 9, 10]),
    },
    "office-hours": {
        "task": "t.office",
        "schedule": crontab(minute="0,30", hour="8-17/2", month_of_year="jan-jun"),
    },
    "every-30-seconds": {"task": "t.heartbeat", "schedule": 30},
    "every-90-minutes": {"task": "t.sync", "schedule": timedelta(minutes=90),
                         "options": {"queue": "jobs.fifo", "MessageGroupId": "sync"}},
    "run-every-6h": {"task": "t.cleanup", "schedule": schedule(run_every=timedelta(hours=6)),
                     "options": {"expires": timedelta(minutes=30)}},
    "odd name.with dots": {"task": "t.odd", "schedule": crontab(minute=0, hour=0)},
}
