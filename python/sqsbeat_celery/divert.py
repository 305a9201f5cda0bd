"""Divert task messages with a far ETA to sqsbeat's intake queue.

SQS cannot hold a message back for more than 15 minutes, and a Celery worker
that receives an ETA task keeps it in flight until the ETA: beyond the
queue's visibility timeout SQS hands it out again and the task runs once per
delivery (or never, if the worker is gone). Diverted messages go instead to
an intake queue that sqsbeat reads; sqsbeat keeps each as a one-off job and
puts the very same message on its original queue in its last 15 minutes
(INTAKE.md is the contract).

Where the interception sits, and why there:

* ``app.send_task`` is the one place every task message goes through
  (``Task.apply_async``, signatures, chains, groups and chords, and
  ``Task.retry`` all end there), and it hands the finished message to
  ``app.amqp.send_task_message(producer, name, message, **options)``. That
  sender is the only call site, so wrapping it on this app's ``amqp``
  object diverts every path and touches no other app and no kombu class.
* The ETA is decided by then (``countdown`` is already ``headers['eta']``),
  so the wrapper judges it before anything is published.
* The wrapper does not re-route by itself: it runs Celery's own sender with
  a producer proxy, and only the proxy's ``publish`` changes the
  destination. Celery therefore still resolves the queue, exchange and
  routing key, fires ``before_task_publish`` and ``after_task_publish``
  (with the destination the task was meant for), sends ``task-sent`` events
  and applies its publish retry policy exactly as without sqsbeat; and the
  proxy sees the final headers, including what ``before_task_publish``
  receivers added.
* Eager mode never reaches the sender (``apply_async`` runs the task in
  place), and result backends only see ``on_task_call`` before the send,
  with the real producer, so neither is affected.
"""

from __future__ import annotations

import logging
import numbers
import uuid
from datetime import timezone as _utc_tz

from celery.utils.time import maybe_iso8601, maybe_make_aware
from kombu import Exchange

logger = logging.getLogger("sqsbeat_celery")

#: The header that marks an intake message and carries where it was meant to go.
INTAKE_HEADER = "sqsbeat_intake"
#: The version of the intake header's layout (INTAKE.md).
INTAKE_VERSION = 1

DEFAULT_INTAKE_QUEUE = "sqsbeat-intake"
#: SQS's own limit on DelaySeconds: shorter ETAs need no help.
DEFAULT_DIVERT_AFTER = 900

#: kombu's SQS transport turns this property into SQS MessageAttributes and
#: keeps it out of the envelope; the intake header carries it instead.
_SQS_MESSAGE_ATTRIBUTES = "message_attributes"

_MARK = "_sqsbeat_celery_installed"


def settings(app):
    """The intake queue name and the divert threshold, validated."""
    queue = app.conf.get("sqsbeat_intake_queue", DEFAULT_INTAKE_QUEUE)
    after = app.conf.get("sqsbeat_divert_after", DEFAULT_DIVERT_AFTER)
    if not isinstance(queue, str) or not queue:
        raise ValueError(
            f"sqsbeat_intake_queue must be a queue name, got {queue!r}; "
            f"set it to the queue sqsbeat reads (default {DEFAULT_INTAKE_QUEUE!r})"
        )
    if isinstance(after, bool) or not isinstance(after, numbers.Real) or after < 0:
        raise ValueError(
            f"sqsbeat_divert_after must be a number of seconds >= 0, got {after!r}; "
            f"the default is {DEFAULT_DIVERT_AFTER}"
        )
    return queue, float(after)


def install(app):
    """Divert this app's far-ETA task messages to sqsbeat's intake queue.

    Call it once the app is configured. Settings (read at every send, so
    later changes apply):

    * ``sqsbeat_intake_queue``: the intake queue's logical name (kombu maps
      it to an SQS name like any queue, with ``queue_name_prefix``),
      default ``"sqsbeat-intake"``;
    * ``sqsbeat_divert_after``: seconds; a message whose ETA lies further
      ahead than this is diverted, default 900.

    Calling it again on the same app does nothing. Returns the app.
    """
    settings(app)
    amqp = app.amqp
    if amqp.__dict__.get(_MARK):
        return app
    # Celery builds its sender lazily from the configuration; keep that, so
    # configuration changed after install() still reaches it.
    built = {"sender": amqp.__dict__.get("send_task_message")}

    def celery_sender():
        if built["sender"] is None:
            built["sender"] = type(amqp).send_task_message.func(amqp)
        return built["sender"]

    def send_task_message(producer, name, message, **options):
        send = celery_sender()
        eta = _divert_eta(app, message)
        if eta is None:
            return send(producer, name, message, **options)
        return send(_IntakeProducer(producer, app, eta), name, message, **options)

    amqp.send_task_message = send_task_message
    amqp.__dict__[_MARK] = True
    return app


def _divert_eta(app, message):
    """The message's ETA (aware) if it is to be diverted, else None."""
    headers = getattr(message, "headers", None)
    if not isinstance(headers, dict) or "eta" not in headers:
        # Task protocol 1 keeps the ETA in the body; sqsbeat takes protocol 2 only.
        return None
    raw = headers.get("eta")
    if not raw:
        return None
    _, after = settings(app)
    # The same reading of the header as the worker's (celery.worker.request):
    # a naive value is UTC.
    eta = maybe_make_aware(maybe_iso8601(raw), app.conf.timezone)
    ahead = (eta - app.now()).total_seconds()
    if ahead <= after:
        return None
    task_id = headers.get("id")
    if not _is_uuid(task_id):
        # sqsbeat keys jobs by task id in a uuid column.
        logger.warning(
            "sqsbeat: task %s id %r is not a UUID, so sqsbeat cannot hold it; "
            "sent to its own queue with its ETA %.0f s ahead (use a UUID task_id to divert it)",
            headers.get("task"), task_id, ahead,
        )
        return None
    return eta


def _is_uuid(value):
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


class _IntakeProducer:
    """A kombu Producer whose ``publish`` goes to the intake queue.

    Everything but ``publish`` is the real producer's (Celery's publish
    retry path uses ``connection`` and ``revive``).
    """

    def __init__(self, producer, app, eta):
        self._producer = producer
        self._app = app
        self._eta = eta

    def __getattr__(self, name):
        return getattr(self._producer, name)

    def publish(self, body, routing_key=None, exchange=None, declare=None,
                headers=None, **kwargs):
        intake, _ = settings(self._app)
        target = self._destination(exchange, routing_key, declare)
        if target is None:
            return self._producer.publish(
                body, routing_key=routing_key, exchange=exchange,
                declare=declare, headers=headers, **kwargs)
        target["message_attributes"] = kwargs.pop(_SQS_MESSAGE_ATTRIBUTES, None)
        headers = dict(headers or {})
        headers[INTAKE_HEADER] = target
        logger.debug("sqsbeat: task %s (%s) due %s diverted to %s",
                     headers.get("task"), headers.get("id"), target["eta"], intake)
        # The original queue is still declared (created if missing), as Celery
        # would have done, so it exists when sqsbeat sends there. The intake
        # queue is not: kombu's SQS put resolves (or creates) it by itself,
        # and a declare would need GetQueueAttributes on it as well.
        return self._producer.publish(
            body, routing_key=intake, exchange="", declare=declare,
            headers=headers, **kwargs)

    def _destination(self, exchange, routing_key, declare):
        """Where kombu would have put the message, as the intake header says it."""
        exchange_name = exchange.name if isinstance(exchange, Exchange) else (exchange or "")
        if routing_key is None:
            routing_key = self._producer.routing_key
        channel = self._producer.channel
        if not exchange_name:
            queue = routing_key
        else:
            # A named exchange: kombu's virtual transports route through the
            # bindings declared in this process, so declare as Celery would
            # have and ask the channel.
            for entity in declare or ():
                self._producer.maybe_declare(entity)
            lookup = getattr(channel, "_lookup", None)
            found = sorted(lookup(exchange_name, routing_key)) if lookup else []
            if len(found) != 1:
                logger.warning(
                    "sqsbeat: exchange %r routing key %r leads to %d queues, not one; "
                    "sent as is, not diverted", exchange_name, routing_key, len(found))
                return None
            queue = found[0]
        canonical = getattr(channel, "canonical_queue_name", None)
        sqs_queue = canonical(queue) if canonical else queue
        predefined = getattr(channel, "predefined_queues", None) or {}
        url = predefined.get(sqs_queue, {}).get("url") if isinstance(predefined, dict) else None
        return {
            "v": INTAKE_VERSION,
            "eta": self._eta.astimezone(_utc_tz.utc).isoformat(),
            "queue": queue,
            "exchange": exchange_name,
            "routing_key": routing_key,
            "sqs_queue": sqs_queue,
            "queue_url": url,
            "fifo": queue.endswith(".fifo"),
        }
