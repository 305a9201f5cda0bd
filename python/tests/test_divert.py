"""install(app): which messages go to the intake queue, and that they go whole.

Real Celery and kombu against moto's SQS: every message here is read back
from the queue it landed on.
"""

import json
import logging
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from celery import chain
from celery.signals import after_task_publish, before_task_publish
from kombu import Exchange, Queue

import sqsbeat_celery
from sqsbeat_celery import INTAKE_HEADER, intake
from sqsutil import envelope, task_body


def normalized(env):
    """An envelope without the values that differ between two sends of one call:
    the ETA and expiry computed from each send's clock, and kombu's random
    delivery tag."""
    env = json.loads(json.dumps(env))
    for key in ("eta", "expires"):
        env["headers"][key] = f"<{key}>"
    env["properties"]["delivery_tag"] = "<delivery_tag>"
    return env


def eta_of(env):
    return datetime.fromisoformat(env["headers"]["eta"])


def test_countdown_beyond_the_window_lands_on_the_intake_queue_whole(app_factory, sqs, names):
    q = names("q-whole")
    diverting = app_factory()
    plain = app_factory(install=False)
    tid = str(uuid.uuid4())

    def send(app):
        add = app.tasks["tests.add"]
        return add.apply_async(
            (2, 3), countdown=3600, queue=q, task_id=tid, priority=3, reply_to="replies",
            headers={"x-trace": "abc"}, expires=7200, time_limit=60,
            link=add.s(10).set(task_id=str(uuid.UUID(int=1))),
            link_error=add.s(20).set(task_id=str(uuid.UUID(int=2))),
            message_attributes={"tenant": {"DataType": "String", "StringValue": "t1"}})

    before = datetime.now(timezone.utc)
    result = send(diverting)
    [diverted] = sqs.take(diverting.conf.sqsbeat_intake_queue)
    send(plain)
    [direct] = sqs.take(q)

    assert result.id == tid
    got, want = envelope(diverted), envelope(direct)
    target = got["headers"][INTAKE_HEADER]
    assert target == {
        "v": 1, "eta": eta_of(got).astimezone(timezone.utc).isoformat(), "queue": q,
        "exchange": "", "routing_key": q, "sqs_queue": q, "queue_url": None, "fifo": False,
        "message_attributes": {"tenant": {"DataType": "String", "StringValue": "t1"}},
    }
    assert timedelta(seconds=3599) < eta_of(got) - before < timedelta(seconds=3700)
    # kombu routed it to the intake queue, and kept the SQS message
    # attributes for the destination only.
    assert got["properties"]["delivery_info"] == {
        "exchange": "", "routing_key": diverting.conf.sqsbeat_intake_queue}
    assert "MessageAttributes" not in diverted
    assert direct["MessageAttributes"] == target["message_attributes"]
    # Everything else is the message Celery sends, callbacks included.
    assert task_body(got) == task_body(want)
    assert task_body(got)[2]["callbacks"][0]["args"] == [10]
    assert task_body(got)[2]["errbacks"][0]["args"] == [20]
    released = intake.release_envelope(intake.read(diverted["Body"]))
    assert normalized(released) == normalized(want)
    assert list(released["headers"]) == list(want["headers"])
    assert list(released["properties"]) == list(want["properties"])


@pytest.mark.parametrize("how", ["eta", "send_task", "signature", "chain"])
def test_every_way_of_sending_a_far_eta_is_diverted(app_factory, sqs, names, how):
    app = app_factory()
    add = app.tasks["tests.add"]
    q = names("q-way")
    tid = str(uuid.uuid4())
    if how == "eta":
        add.apply_async((1, 2), eta=datetime.now(timezone.utc) + timedelta(days=3), queue=q,
                        task_id=tid)
    elif how == "send_task":
        app.send_task("elsewhere.task", args=[1], eta=datetime.now(timezone.utc) + timedelta(hours=2),
                      queue=q, task_id=tid)
    elif how == "signature":
        add.s(1, 2).set(queue=q, task_id=tid).apply_async(countdown=7200)
    else:
        chain(add.s(1, 2).set(queue=q, task_id=tid), add.s(3).set(queue=names("q-next"))
              ).apply_async(countdown=7200)
    [m] = sqs.take(app.conf.sqsbeat_intake_queue)
    env = envelope(m)
    assert env["headers"]["id"] == tid
    assert env["headers"][INTAKE_HEADER]["queue"] == q
    if how == "chain":
        assert [s["args"] for s in task_body(env)[2]["chain"]] == [[3]]
    assert not sqs.exists(q) or sqs.count(q) == 0


@pytest.mark.parametrize("countdown, diverted", [(60, False), (899, False), (901, True)])
def test_only_etas_beyond_the_window_are_diverted(app_factory, sqs, names, countdown, diverted):
    app = app_factory()
    q = names("q-window")
    app.tasks["tests.add"].apply_async((1, 2), countdown=countdown, queue=q)
    [m] = sqs.take(app.conf.sqsbeat_intake_queue if diverted else q)
    assert (INTAKE_HEADER in envelope(m)["headers"]) is diverted


def test_the_window_is_the_setting_read_at_each_send(app_factory, sqs, names):
    app = app_factory(sqsbeat_divert_after=10)
    q = names("q-setting")
    add = app.tasks["tests.add"]
    add.apply_async((1, 2), countdown=5, queue=q)
    add.apply_async((1, 2), countdown=15, queue=q)
    sqs.take(q)
    sqs.take(app.conf.sqsbeat_intake_queue)
    app.conf.sqsbeat_divert_after = 20
    add.apply_async((1, 2), countdown=15, queue=q)
    sqs.take(q)


def test_no_eta_is_never_diverted(app_factory, sqs, names):
    app = app_factory()
    q = names("q-now")
    app.tasks["tests.add"].apply_async((1, 2), queue=q)
    [m] = sqs.take(q)
    assert INTAKE_HEADER not in envelope(m)["headers"]
    assert not sqs.exists(app.conf.sqsbeat_intake_queue)


def test_publish_signals_fire_with_the_original_destination(app_factory, sqs, names):
    app = app_factory()
    q = names("q-signals")
    tid = str(uuid.uuid4())
    seen = []

    def before(sender=None, headers=None, routing_key=None, **kw):
        if headers.get("id") == tid:
            seen.append(("before", routing_key))
            headers["added-by-receiver"] = "yes"

    def after(sender=None, headers=None, routing_key=None, **kw):
        if headers.get("id") == tid:
            seen.append(("after", routing_key))

    before_task_publish.connect(before, weak=False)
    after_task_publish.connect(after, weak=False)
    try:
        app.tasks["tests.add"].apply_async((1, 2), countdown=3600, queue=q, task_id=tid)
    finally:
        before_task_publish.disconnect(before)
        after_task_publish.disconnect(after)
    assert seen == [("before", q), ("after", q)]
    [m] = sqs.take(app.conf.sqsbeat_intake_queue)
    assert envelope(m)["headers"]["added-by-receiver"] == "yes"


def test_eager_mode_runs_in_place_and_sends_nothing(app_factory, sqs):
    app = app_factory(task_always_eager=True)
    result = app.tasks["tests.add"].apply_async((2, 3), countdown=3600)
    assert result.get() == 5
    assert not sqs.exists(app.conf.sqsbeat_intake_queue)


def test_result_of_a_diverted_task_keeps_its_id(app_factory, sqs, tmp_path):
    app = app_factory(result_backend=f"file://{tmp_path}")
    result = app.tasks["tests.add"].apply_async((2, 3), countdown=3600)
    [m] = sqs.take(app.conf.sqsbeat_intake_queue)
    assert envelope(m)["headers"]["id"] == result.id
    assert app.AsyncResult(result.id).state == "PENDING"


def test_fifo_destination_behind_a_queue_name_prefix(app_factory, sqs, names):
    app = app_factory(transport_options={"queue_name_prefix": "pfx."})
    intake_name = app.conf.sqsbeat_intake_queue
    app.tasks["tests.add"].apply_async((1, 2), countdown=3600, queue="jobs.fifo",
                                       MessageGroupId="grp-A")
    # The intake queue is a logical name too: kombu prefixes and mangles it.
    [m] = sqs.take("pfx-" + intake_name)
    env = envelope(m)
    target = env["headers"][INTAKE_HEADER]
    assert (target["queue"], target["sqs_queue"], target["fifo"]) == ("jobs.fifo", "pfx-jobs.fifo", True)
    assert env["properties"]["MessageGroupId"] == "grp-A"
    params = intake.release(intake.read(m["Body"]), datetime.now(timezone.utc))
    assert params["MessageGroupId"] == "grp-A" and "DelaySeconds" not in params


def test_named_exchange_destination_is_recorded_as_kombu_routes_it(app_factory, sqs, names):
    q = names("q-topic")
    queues = [Queue("celery"), Queue(q, Exchange(names("tx"), type="topic"), routing_key="a.#")]
    app = app_factory(task_queues=queues)
    app.tasks["tests.add"].apply_async((1, 2), countdown=3600, queue=q, routing_key="a.b")
    [m] = sqs.take(app.conf.sqsbeat_intake_queue)
    target = envelope(m)["headers"][INTAKE_HEADER]
    assert (target["queue"], target["exchange"], target["routing_key"]) == (q, names("tx"), "a.b")
    app.conf.sqsbeat_divert_after = 10 ** 9
    app.tasks["tests.add"].apply_async((1, 2), countdown=3600, queue=q, routing_key="a.b")
    [direct] = sqs.take(q)
    assert envelope(direct)["properties"]["delivery_info"] == {"exchange": names("tx"), "routing_key": "a.b"}


def test_a_task_id_that_is_not_a_uuid_is_sent_as_is_with_a_warning(app_factory, sqs, names, caplog):
    app = app_factory()
    q = names("q-custom-id")
    with caplog.at_level(logging.WARNING, logger="sqsbeat_celery"):
        app.tasks["tests.add"].apply_async((1, 2), countdown=3600, queue=q, task_id="order-42")
    [m] = sqs.take(q)
    assert envelope(m)["headers"]["id"] == "order-42"
    assert "not a UUID" in caplog.text


def test_install_twice_diverts_once(app_factory, sqs):
    app = app_factory()
    sqsbeat_celery.install(app)
    app.tasks["tests.add"].apply_async((1, 2), countdown=3600)
    [m] = sqs.take(app.conf.sqsbeat_intake_queue)
    assert list(envelope(m)["headers"]).count(INTAKE_HEADER) == 1


@pytest.mark.parametrize("conf", [{"sqsbeat_divert_after": -1}, {"sqsbeat_divert_after": "15m"},
                                  {"sqsbeat_intake_queue": ""}])
def test_bad_settings_are_refused_at_install(app_factory, conf):
    with pytest.raises(ValueError, match="sqsbeat_"):
        app_factory(**conf)
