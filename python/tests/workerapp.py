"""The app of the real Celery worker the tests start (``celery -A workerapp worker``).

The environment sets where moto is (TEST_SQS_ENDPOINT), the intake queue
(TEST_INTAKE), the result backend (TEST_RESULTS), the file executions are
recorded to (TEST_RECORD), the file publishes and receipts are recorded to (TEST_MARK) and
the file that tells ``tests.flaky`` whether its retry may be diverted
(TEST_MODE: ``divert`` or ``direct``).
"""

import json
import os
import time

from celery.signals import after_task_publish, task_received

from sqsutil import make_app

app = make_app(
    os.environ["TEST_SQS_ENDPOINT"],
    sqsbeat_intake_queue=os.environ["TEST_INTAKE"],
    result_backend=os.environ["TEST_RESULTS"],
    worker_hijack_root_logger=False,
)


def _append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


@app.task(name="tests.record", bind=True, shared=False)
def record(self, n):
    req = self.request
    _append(os.environ["TEST_RECORD"], {
        "id": req.id, "n": n, "retries": req.retries, "eta": req.eta, "at": time.time(),
        "delivery_info": {k: req.delivery_info.get(k) for k in ("exchange", "routing_key")},
    })
    return n * 2


@app.task(name="tests.flaky", bind=True, shared=False)
def flaky(self, n):
    if self.request.retries == 0:
        with open(os.environ["TEST_MODE"]) as f:
            mode = f.read().strip()
        # The setting is read at every send: "direct" shows what Celery
        # itself sends for this retry.
        app.conf.sqsbeat_divert_after = 900 if mode == "divert" else 10 ** 9
        raise self.retry(countdown=3600, exc=RuntimeError("first attempt fails"))
    return n


@after_task_publish.connect(weak=False)
def _published(sender=None, headers=None, routing_key=None, **kwargs):
    _append(os.environ["TEST_MARK"], {"event": "published", "id": headers.get("id"),
                                      "retries": headers.get("retries"), "routing_key": routing_key})


@task_received.connect(weak=False)
def _received(request=None, **kwargs):
    # From here the worker holds an ETA message, and a warm shutdown gives it
    # back to its queue.
    _append(os.environ["TEST_MARK"], {"event": "received", "id": request.id,
                                      "retries": request.request_dict.get("retries")})
