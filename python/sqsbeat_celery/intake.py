"""The intake contract as code: read an intake message, build its release.

This is the reference for what sqsbeat does with a message from the intake
queue (INTAKE.md): :func:`read` checks it and says why it is malformed,
:func:`release` builds the SQS ``SendMessage`` that puts on the original
queue exactly the message Celery would have sent. sqsbeat implements the
same rules; the golden fixtures in ``tests/fixtures/intake`` are checked
against this module.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from .divert import INTAKE_HEADER, INTAKE_VERSION

#: kombu's test for a base64 body (``SQS.Channel.B64_REGEX``).
_B64 = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")
#: An SQS queue name: 1..80 of these, a FIFO one ends in ".fifo".
_SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
#: SQS DelaySeconds maximum.
MAX_DELAY_SECONDS = 900


class MalformedIntake(ValueError):
    """An intake message sqsbeat must set aside; the text says why."""


@dataclass
class Intake:
    """A checked intake message."""

    #: The kombu envelope as received, key order kept.
    envelope: dict
    #: The ``sqsbeat_intake`` header: where the message was meant to go.
    target: dict
    task_id: str
    task: str
    retries: int
    #: When the task is due (aware, UTC).
    eta: datetime
    #: Whether the SQS body was base64 (kombu's ``sqs_base64_encoding``).
    base64_body: bool


def _decode_body(sqs_body: str) -> tuple[str, bool]:
    """kombu's ``_optional_b64_decode``: base64 only if it round-trips."""
    candidate = sqs_body.strip()
    if _B64.fullmatch(candidate):
        try:
            raw = base64.b64decode(candidate, validate=True)
            if base64.b64encode(raw).rstrip(b"=") == candidate.encode().rstrip(b"="):
                return raw.decode("utf-8"), True
        except (binascii.Error, ValueError, UnicodeDecodeError):
            pass
    return sqs_body, False


def _instant(value, what: str) -> datetime:
    if not isinstance(value, str):
        raise MalformedIntake(f"{what} must be an ISO 8601 string, got {value!r}")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedIntake(f"{what} {value!r} is not an ISO 8601 instant") from None
    if t.tzinfo is None:
        raise MalformedIntake(f"{what} {value!r} has no UTC offset")
    return t.astimezone(timezone.utc)


def read(sqs_body: str, intake_queue: str | None = None) -> Intake:
    """Checks an intake SQS message body; raises MalformedIntake with the reason."""
    text, b64 = _decode_body(sqs_body)
    try:
        env = json.loads(text)
    except ValueError as e:
        raise MalformedIntake(f"body is neither base64 of JSON nor JSON: {e}") from None
    if not isinstance(env, dict):
        raise MalformedIntake("envelope is not a JSON object")
    for key, kind in (("body", str), ("content-type", str), ("headers", dict),
                      ("properties", dict)):
        if not isinstance(env.get(key), kind):
            raise MalformedIntake(f"envelope {key!r} is missing or not a {kind.__name__}")
    headers, props = env["headers"], env["properties"]
    if not isinstance(props.get("delivery_info"), dict):
        raise MalformedIntake("properties.delivery_info is missing or not an object")
    if props.get("body_encoding") not in (None, "base64"):
        raise MalformedIntake(f"properties.body_encoding {props.get('body_encoding')!r} is not base64")
    task = headers.get("task")
    if not isinstance(task, str) or not task or any(c.isspace() for c in task):
        raise MalformedIntake(f"headers.task {task!r} is not a task name")
    task_id = headers.get("id")
    try:
        if not isinstance(task_id, str):
            raise ValueError
        uuid.UUID(task_id)
    except ValueError:
        raise MalformedIntake(f"headers.id {task_id!r} is not a UUID") from None
    retries = headers.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise MalformedIntake(f"headers.retries {retries!r} is not a count")
    target = headers.get(INTAKE_HEADER)
    if not isinstance(target, dict):
        raise MalformedIntake(f"headers.{INTAKE_HEADER} is missing: not an intake message")
    if target.get("v") != INTAKE_VERSION:
        raise MalformedIntake(
            f"headers.{INTAKE_HEADER}.v is {target.get('v')!r}; this reader knows {INTAKE_VERSION}")
    eta = _instant(target.get("eta"), f"headers.{INTAKE_HEADER}.eta")
    if headers.get("eta") is None:
        raise MalformedIntake("headers.eta is null: nothing to wait for")
    for key in ("queue", "sqs_queue"):
        if not isinstance(target.get(key), str) or not target[key]:
            raise MalformedIntake(f"headers.{INTAKE_HEADER}.{key} is missing or empty")
    for key in ("exchange", "routing_key"):
        if not isinstance(target.get(key), str):
            raise MalformedIntake(f"headers.{INTAKE_HEADER}.{key} is missing or not a string")
    sqs_queue = target["sqs_queue"]
    stem = sqs_queue[:-5] if sqs_queue.endswith(".fifo") else sqs_queue
    if not _SQS_NAME.fullmatch(stem) or len(sqs_queue) > 80:
        raise MalformedIntake(f"headers.{INTAKE_HEADER}.sqs_queue {sqs_queue!r} is not an SQS queue name")
    if not isinstance(target.get("fifo"), bool):
        raise MalformedIntake(f"headers.{INTAKE_HEADER}.fifo is missing or not a boolean")
    if target["fifo"] != sqs_queue.endswith(".fifo"):
        raise MalformedIntake(
            f"headers.{INTAKE_HEADER}.fifo is {target['fifo']} but sqs_queue is {sqs_queue!r}")
    if target.get("queue_url") is not None and not isinstance(target["queue_url"], str):
        raise MalformedIntake(f"headers.{INTAKE_HEADER}.queue_url is not a string")
    attrs = target.get("message_attributes")
    if attrs is not None and not isinstance(attrs, dict):
        raise MalformedIntake(f"headers.{INTAKE_HEADER}.message_attributes is not an object")
    if intake_queue is not None and target["queue"] == intake_queue:
        raise MalformedIntake(f"the destination is the intake queue {intake_queue!r} itself")
    return Intake(env, target, task_id, task, retries, eta, b64)


def release_envelope(intake: Intake) -> dict:
    """The envelope Celery would have put on the original queue."""
    env = json.loads(json.dumps(intake.envelope))
    del env["headers"][INTAKE_HEADER]
    env["properties"]["delivery_info"] = {
        "exchange": intake.target["exchange"],
        "routing_key": intake.target["routing_key"],
    }
    return env


def release(intake: Intake, now: datetime) -> dict:
    """The SQS SendMessage parameters (less QueueUrl) for sending at ``now``.

    ``QueueName`` is the SQS name to resolve (``QueueUrl``, when the app's
    transport has it predefined, is given instead).
    """
    env = release_envelope(intake)
    text = json.dumps(env)
    body = base64.b64encode(text.encode()).decode() if intake.base64_body else text
    params = {"MessageBody": body}
    if intake.target.get("queue_url"):
        params["QueueUrl"] = intake.target["queue_url"]
    else:
        params["QueueName"] = intake.target["sqs_queue"]
    props = env["properties"]
    if intake.target.get("message_attributes"):
        params["MessageAttributes"] = intake.target["message_attributes"]
    if "MessageGroupId" in props:
        params["MessageGroupId"] = props["MessageGroupId"]
    if intake.target["fifo"]:
        params.setdefault("MessageGroupId", "default")
        params["MessageDeduplicationId"] = props.get(
            "MessageDeduplicationId", f"{intake.task_id}:{intake.retries}")
    else:
        wait = (intake.eta - now).total_seconds()
        params["DelaySeconds"] = max(0, min(MAX_DELAY_SECONDS, math.ceil(wait)))
    return params
