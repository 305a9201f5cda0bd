"""The intake contract (INTAKE.md) against the golden fixtures captured from
real Celery + kombu (tests/fixtures/intake), and what counts as malformed."""

import base64
import json
from datetime import datetime
from pathlib import Path

import pytest

from sqsbeat_celery import intake

FIXTURES = Path(__file__).resolve().parents[2] / "tests/fixtures/intake"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "meta.json").exists())


def test_the_fixtures_cover_the_documented_cases():
    assert set(CASES) >= {
        "apply_async_eta", "apply_async_countdown", "send_task_eta", "signature_countdown",
        "chain_countdown", "link_callbacks", "chord_countdown", "options_headers_attributes",
        "fifo_default_group", "fifo_group_dedup", "queue_name_prefix", "no_base64",
        "retry_countdown_worker"}


@pytest.mark.parametrize("case", CASES)
def test_release_of_the_intake_message_is_the_direct_message_byte_for_byte(case):
    folder = FIXTURES / case
    meta = json.loads((folder / "meta.json").read_text())
    body = (folder / "intake/sqs_body.raw").read_text()
    got = intake.read(body, intake_queue=meta["intake_queue"])
    assert got.task_id == meta["celery_task_id"]
    assert got.eta == datetime.fromisoformat(meta["eta"])
    assert got.target["sqs_queue"] == meta["destination"]["sqs_queue"]
    assert (folder / "intake/task_body.raw.json").read_bytes() == \
        (folder / "direct/task_body.raw.json").read_bytes()
    released = json.dumps(intake.release_envelope(got)).encode()
    assert released == (folder / "direct/envelope.raw.json").read_bytes()
    release = json.loads((folder / "release.json").read_text())
    params = intake.release(got, datetime.fromisoformat(release["now"]))
    assert params == release["send_message"]
    assert params["MessageBody"] == (folder / "direct/sqs_body.raw").read_text()


def _fixture_envelope():
    raw = (FIXTURES / "apply_async_countdown/intake/envelope.raw.json").read_text()
    return json.loads(raw)


def _b64(env):
    return base64.b64encode(json.dumps(env).encode()).decode()


def _mutated(change):
    env = _fixture_envelope()
    change(env)
    return _b64(env)


def _set(path, value):
    def change(env):
        *parents, last = path
        node = env
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return change


_DELETE = object()
H = ("headers", intake.INTAKE_HEADER)

MALFORMED = [
    ("not json", "eyJub3QganNvbg==", "neither base64 of JSON nor JSON"),
    ("a list", _b64([1, 2]), "not a JSON object"),
    ("no body", _mutated(_set(("body",), _DELETE)), "'body'"),
    ("no headers", _mutated(_set(("headers",), _DELETE)), "'headers'"),
    ("no delivery_info", _mutated(_set(("properties", "delivery_info"), _DELETE)), "delivery_info"),
    ("no task", _mutated(_set(("headers", "task"), None)), "headers.task"),
    ("id not a uuid", _mutated(_set(("headers", "id"), "order-42")), "not a UUID"),
    ("negative retries", _mutated(_set(("headers", "retries"), -1)), "retries"),
    ("not diverted", _mutated(_set(H, _DELETE)), "not an intake message"),
    ("unknown version", _mutated(_set(H + ("v",), 2)), "knows 1"),
    ("eta not a time", _mutated(_set(H + ("eta",), "tomorrow")), "not an ISO 8601"),
    ("eta without offset", _mutated(_set(H + ("eta",), "2030-01-15T13:00:00")), "no UTC offset"),
    ("no queue", _mutated(_set(H + ("queue",), "")), "queue is missing"),
    ("bad sqs name", _mutated(_set(H + ("sqs_queue",), "a b")), "not an SQS queue name"),
    ("fifo mismatch", _mutated(_set(H + ("fifo",), True)), "fifo is True"),
    ("attributes not an object", _mutated(_set(H + ("message_attributes",), [1])), "message_attributes"),
    ("to the intake itself", _mutated(_set(H + ("queue",), "sqsbeat-intake")), "intake queue"),
]


@pytest.mark.parametrize("what, body, reason", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_intake_messages_are_refused_with_their_reason(what, body, reason):
    with pytest.raises(intake.MalformedIntake) as e:
        intake.read(body, intake_queue="sqsbeat-intake")
    assert reason in str(e.value)


def test_an_unchanged_fixture_is_not_malformed():
    intake.read(_mutated(lambda env: None), intake_queue="sqsbeat-intake")
