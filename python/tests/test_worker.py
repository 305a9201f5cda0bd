"""With a real Celery worker (-P solo): a retry is diverted whole, and an
intake message released as INTAKE.md says runs once, at its ETA, under its id."""

import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sqsbeat_celery import INTAKE_HEADER, intake
from sqsutil import Sqs, envelope, task_body, wait_until

HERE = Path(__file__).resolve().parent


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


class Worker:
    """``celery -A workerapp worker -P solo`` on moto, with its files."""

    def __init__(self, endpoint, tmp, queues, intake_queue):
        self.record, self.mark, self.mode = tmp / "record.jsonl", tmp / "mark.jsonl", tmp / "mode"
        self.results = tmp / "results"
        self.results.mkdir()
        self.mode.write_text("divert")
        self.log = tmp / "worker.log"
        env = dict(os.environ, TEST_SQS_ENDPOINT=endpoint, TEST_INTAKE=intake_queue,
                   TEST_RESULTS=f"file://{self.results}", TEST_RECORD=str(self.record),
                   TEST_MARK=str(self.mark), TEST_MODE=str(self.mode),
                   PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workerapp", "worker", "-P", "solo", "-c", "1",
             "-Q", queues, "-l", "INFO", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"test-{uuid.uuid4().hex[:6]}@%h"],
            cwd=tmp, env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("worker exited:\n" + self.log.read_text())
            return "ready." in self.log.read_text()

        wait_until("celery worker start", 60, ready)

    def stop(self):
        """Warm shutdown: kombu gives back the ETA messages it holds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


@pytest.fixture
def worker_factory(moto, tmp_path):
    started = []

    def start(queues, intake_queue):
        w = Worker(moto, tmp_path, queues, intake_queue)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def test_retry_with_countdown_is_diverted_whole(moto, worker_factory, app_factory, names):
    """The same retry, once diverted and once as Celery sends it, differs
    only in its routing (and in the ETA, counted from each retry's clock)."""
    sqs = Sqs(moto)
    q = names("q-retry")
    producer = app_factory()
    intake_queue = producer.conf.sqsbeat_intake_queue
    worker = worker_factory(q, intake_queue)
    tid = str(uuid.uuid4())

    def seen(event):
        return lambda: any(m["event"] == event and m["id"] == tid and m["retries"] == 1
                           for m in lines(worker.mark))

    producer.send_task("tests.flaky", args=[7], queue=q, task_id=tid)
    wait_until("the diverted retry", 30, seen("published"))
    [diverted] = sqs.take(intake_queue)

    worker.mode.write_text("direct")
    producer.send_task("tests.flaky", args=[7], queue=q, task_id=tid)
    # Sent as is, the retry comes back to the worker, which holds it until
    # its ETA; a warm shutdown gives it back to the queue.
    wait_until("the worker holding the retry", 30, seen("received"))
    worker.stop()
    [direct] = sqs.take(q, wait=15)

    got, want = envelope(diverted), envelope(direct)
    assert got["headers"]["retries"] == want["headers"]["retries"] == 1
    assert got["headers"][INTAKE_HEADER]["queue"] == q
    assert got["properties"]["delivery_info"]["routing_key"] == intake_queue
    assert task_body(got) == task_body(want)
    released = intake.release_envelope(intake.read(diverted["Body"]))
    for env in (released, want):
        env["headers"]["eta"] = "<eta>"
        env["properties"]["delivery_tag"] = "<delivery_tag>"
    assert json.dumps(released) == json.dumps(want)


def test_released_intake_message_runs_once_at_its_eta_under_its_id(moto, worker_factory, app_factory,
                                                                    names, tmp_path):
    """What sqsbeat does with an intake message, done by the reference code:
    the worker runs it once, at its ETA, and AsyncResult(id) sees the result."""
    sqs = Sqs(moto)
    q = names("q-release")
    producer = app_factory(sqsbeat_divert_after=1, result_backend=f"file://{tmp_path / 'results'}")
    worker = worker_factory(q, producer.conf.sqsbeat_intake_queue)
    tid = str(uuid.uuid4())
    result = producer.send_task("tests.record", args=[21], queue=q, task_id=tid, countdown=4)
    [m] = sqs.take(producer.conf.sqsbeat_intake_queue)
    held = intake.read(m["Body"], intake_queue=producer.conf.sqsbeat_intake_queue)

    params = intake.release(held, datetime.now(timezone.utc))
    assert 1 <= params["DelaySeconds"] <= 4
    params["QueueUrl"] = sqs.url(params.pop("QueueName"))
    sqs.client.send_message(**params)

    assert result.get(timeout=30) == 42
    [run] = [r for r in lines(worker.record) if r["id"] == tid]
    assert run["at"] >= held.eta.timestamp() - 0.01
    assert run["delivery_info"] == {"exchange": "", "routing_key": q}
    # Acked and gone: nothing left to run a second time.
    wait_until("the ack", 10, lambda: sqs.count(q) == 0)
    assert [r["id"] for r in lines(worker.record)] == [tid]
