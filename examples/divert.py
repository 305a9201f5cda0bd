"""Sends one task with a far ETA, unchanged Celery code, for the local stack.

    (cd examples && ../.venv/bin/python divert.py)

`send_task(..., countdown=60)` is an ordinary Celery call. With
`sqsbeat_celery.install(app)` (worker.py) and an ETA further ahead than
`sqsbeat_divert_after` (lowered to 30 s below; 900 by default), the message goes to the
`sqsbeat-intake` queue instead of `celery`; sqsbeat stores it as a one-off
job under its Celery task id and puts the same message on `celery` when it
is due, so the worker runs it once, at its ETA, with this id.
"""
from worker import app

# 900 s (SQS's own limit) by default; lowered so the demo takes a minute.
app.conf.sqsbeat_divert_after = 30

result = app.send_task(
    "examples.tasks.send_report",
    kwargs={"account": 42, "diverted": True},
    countdown=60,
)
print(f"sent examples.tasks.send_report id={result.id}, due in 60 s", flush=True)
