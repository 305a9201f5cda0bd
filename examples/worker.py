"""Sample Celery worker for sqsbeat's local stack and end-to-end tests.

An ordinary Celery 5 app on the SQS transport. The one line that knows
about sqsbeat is `sqsbeat_celery.install(app)` (python/), which sends task
messages whose ETA lies beyond SQS's 15 minutes to sqsbeat's intake queue
instead (examples/divert.py shows it). Every task prints what it received; with RECORD_FILE set, every
outcome is also appended there as one JSON object per line (event =
executed, revoked or unknown), which is how the end-to-end tests judge
what really ran.

Run it:  celery -A worker worker -P solo -Q celery,reports   (from examples/)

Environment:
  SQS_ENDPOINT   SQS endpoint URL (default http://127.0.0.1:9324; unset
                 SQS_ENDPOINT=aws to use real AWS with the default chain)
  AWS_REGION     default us-east-1
  QUEUE_PREFIX   kombu queue_name_prefix (default empty)
  TASK_NAMES     extra task names to accept, comma separated
  FAIL_TASKS     task names that raise after recording (comma separated)
  RECORD_FILE    JSON-lines file of outcomes (optional)
  SQSBEAT_DIVERT_AFTER  seconds beyond which an ETA goes to the intake queue
                 (default 900, SQS's own limit; the local stack's demo lowers it)
  SENTRY_DSN     report to Sentry, with Sentry Crons check-ins for the
                 fires of entries with `sentry_monitor = true` (needs
                 sentry-sdk; what a worker has under celery beat)
"""
import json
import os
import threading
from datetime import datetime, timezone
from urllib.parse import urlsplit

from celery import Celery, signals

if os.environ.get("SENTRY_DSN"):
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration

    # monitor_beat_tasks makes the worker close each fire's check-in (ok,
    # or error when the task raises), reading the headers sqsbeat adds.
    sentry_sdk.init(
        dsn=os.environ["SENTRY_DSN"],
        integrations=[CeleryIntegration(monitor_beat_tasks=True)],
    )

endpoint = os.environ.get("SQS_ENDPOINT", "http://127.0.0.1:9324")
transport = {
    "region": os.environ.get("AWS_REGION", "us-east-1"),
    "queue_name_prefix": os.environ.get("QUEUE_PREFIX", ""),
    # Short polls keep the demo and the tests responsive.
    "wait_time_seconds": 1,
    "polling_interval": 0.2,
}
if endpoint == "aws":
    broker = "sqs://"
else:
    ep = urlsplit(endpoint)
    transport["is_secure"] = ep.scheme == "https"
    # kombu takes the endpoint from the URL's host and port, and the AWS
    # key and secret from its user and password (any value for an emulator).
    broker = f"sqs://{os.environ.get('AWS_ACCESS_KEY_ID', 'x')}:{os.environ.get('AWS_SECRET_ACCESS_KEY', 'y')}@{ep.hostname}:{ep.port or 80}"

app = Celery("examples")
app.conf.update(
    broker_url=broker,
    broker_transport_options=transport,
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    enable_utc=True,
    timezone="UTC",
    worker_hijack_root_logger=False,
    # Task prints go straight to the terminal, not through the WARNING logger.
    worker_redirect_stdouts=False,
    broker_connection_retry_on_startup=True,
)

try:
    import sqsbeat_celery
except ImportError:  # the package is optional for the end-to-end tests
    sqsbeat_celery = None
if sqsbeat_celery is not None:
    app.conf.sqsbeat_divert_after = int(os.environ.get("SQSBEAT_DIVERT_AFTER", "900"))
    sqsbeat_celery.install(app)

RECORD_FILE = os.environ.get("RECORD_FILE")
_lock = threading.Lock()


def record(event):
    if not RECORD_FILE:
        return
    with _lock, open(RECORD_FILE, "a") as f:
        f.write(json.dumps(event, sort_keys=True, default=str) + "\n")


def _report(task, args, kwargs):
    req = task.request
    scheduled = getattr(req, "sqsbeat_scheduled_at", None)
    print(
        f"[{datetime.now(timezone.utc).isoformat(timespec='milliseconds')}] {task.name} "
        f"id={req.id} args={list(args)} kwargs={kwargs} slot={scheduled}",
        flush=True,
    )
    headers = {k: getattr(req, k, None) for k in ("periodic_task_name", "sqsbeat_scheduled_at", "celery_beat_task")}
    extra = {k: v for k, v in vars(req).items() if k not in ("args", "kwargs") and not k.startswith("_")}
    record({
        "event": "executed",
        "task": task.name,
        "id": req.id,
        "args": list(args),
        "kwargs": kwargs,
        "expires": str(req.expires) if req.expires else None,
        "routing_key": (req.delivery_info or {}).get("routing_key"),
        "headers": headers,
        "custom": {k: v for k, v in extra.items() if isinstance(v, (str, int, float, bool))},
        "executed_at": datetime.now(timezone.utc).isoformat(),
    })


FAIL = {n.strip() for n in os.environ.get("FAIL_TASKS", "").split(",") if n.strip()}


def _make_task(name):
    @app.task(bind=True, name=name)
    def task(self, *args, **kwargs):
        _report(self, args, kwargs)
        if name in FAIL:
            raise RuntimeError(f"{name} fails on purpose")
    return task


NAMES = [
    "examples.tasks.heartbeat",
    "examples.tasks.capture_payments",
    "examples.tasks.nightly_report",
    "examples.tasks.settle",
    "examples.tasks.warm_cache",
    "examples.tasks.sync_prices",
    "examples.tasks.send_report",
]
NAMES += [n.strip() for n in os.environ.get("TASK_NAMES", "").split(",") if n.strip()]
NAMES += sorted(FAIL - set(NAMES))
for _name in NAMES:
    _make_task(_name)


@signals.task_revoked.connect
def _revoked(request=None, expired=False, **_):
    print(f"dropped {getattr(request, 'task', '?')} id={getattr(request, 'id', '?')} expired={expired}", flush=True)
    record({"event": "revoked", "id": getattr(request, "id", None), "task": getattr(request, "task", None), "expired": expired})


@signals.task_unknown.connect
def _unknown(name=None, id=None, **_):
    record({"event": "unknown", "task": name, "id": id})
