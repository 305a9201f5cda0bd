"""Helpers for the tests: Celery apps on moto, reading SQS, waiting on processes."""

import base64
import json
import socket
import time

import boto3
from celery import Celery

import sqsbeat_celery


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, seconds, ready, poll=0.1):
    """Waits for an outside process to get somewhere; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(poll)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def broker_options(**extra):
    return {"region": "us-east-1", "is_secure": False, "wait_time_seconds": 1, **extra}


def make_app(endpoint, install=True, transport_options=None, **conf):
    """A Celery app whose broker is moto's SQS, with the tasks the tests call."""
    host = endpoint.split("://", 1)[1]
    app = Celery("sqsbeat_tests", broker=f"sqs://x:y@{host}", set_as_current=False)
    app.conf.broker_transport_options = broker_options(**(transport_options or {}))
    app.conf.update(task_serializer="json", accept_content=["json"], enable_utc=True, timezone="UTC")
    app.conf.update(conf)

    @app.task(name="tests.add", shared=False)
    def add(a, b):
        return a + b

    if install:
        sqsbeat_celery.install(app)
    return app


class Sqs:
    """boto3 on moto, for reading what Celery put on a queue."""

    def __init__(self, endpoint):
        self.client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                                   aws_access_key_id="x", aws_secret_access_key="y")

    def url(self, name):
        return self.client.get_queue_url(QueueName=name)["QueueUrl"]

    def exists(self, name):
        try:
            self.url(name)
            return True
        except self.client.exceptions.QueueDoesNotExist:
            return False

    def take(self, name, expect=1, wait=5):
        """Receives `expect` messages (all attributes) from a queue, deletes them,
        and checks nothing else is there."""
        url = self.url(name)
        got = []
        deadline = time.monotonic() + wait
        while len(got) < expect and time.monotonic() < deadline:
            got += self.client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
        for m in got:
            self.client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        assert len(got) == expect, f"{name}: expected {expect} message(s), got {len(got)}"
        assert self.count(name) == 0, f"{name}: more messages than expected"
        return got

    def count(self, name):
        attrs = self.client.get_queue_attributes(
            QueueUrl=self.url(name),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return sum(int(v) for v in attrs.values())


def envelope(message):
    """The kombu envelope of an SQS message (base64 or raw JSON body)."""
    body = message["Body"]
    try:
        return json.loads(base64.b64decode(body, validate=True))
    except ValueError:
        return json.loads(body)


def task_body(env):
    return json.loads(base64.b64decode(env["body"]))
