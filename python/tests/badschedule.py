"""A beat_schedule with entries sqsbeat has no equivalent for (and one it has)."""

from datetime import datetime, timedelta

from celery import Celery
from celery.schedules import crontab, schedule, solar

app = Celery("badschedule", set_as_current=False)
app.conf.timezone = "Europe/Berlin"
app.conf.beat_schedule = {
    "fine": {"task": "t.fine", "schedule": crontab(minute=0)},
    "at-sunset": {"task": "t.solar", "schedule": solar("sunset", 52.52, 13.40)},
    "relative-entry": {"task": "t.rel", "schedule": timedelta(hours=1), "relative": True},
    "relative-schedule": {"task": "t.rel", "schedule": schedule(timedelta(hours=1), relative=True)},
    "datetime-arg": {"task": "t.args", "schedule": 60, "args": (datetime(2030, 1, 1),)},
    "null-kwarg": {"task": "t.args", "schedule": 60, "kwargs": {"when": None}},
    "unknown-option": {"task": "t.opt", "schedule": 60, "options": {"countdown": 10}},
    "absolute-expiry": {"task": "t.opt", "schedule": 60, "options": {"expires": datetime(2030, 1, 1)}},
}
