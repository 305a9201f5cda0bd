"""moto's SQS server for benchmarks, with its per-send queue scan removed.

Stock moto 5.2.5 reads `queue.attributes` on every SendMessage, which counts
visible, delayed and in-flight messages by scanning the whole queue with a
slow clock (a datetime per message): after 800 queued messages one send
costs about 57 ms here. This launcher replaces the three approximate counts
with the number of stored messages (only GetQueueAttributes reads them) and
moto's clock with `time.time()`. Send and receive behave as before.

It also writes one CSV line per accepted message, in the format of
examples/sqs_sink.rs: `accepted_unix_ms,scheduled_unix_ms,entry`.

    python benches/moto_fast.py PORT RECORD_FILE
"""

import base64
import json
import signal
import sys
import threading
import time
from datetime import datetime

import moto.core.utils as core_utils
from moto.server import ThreadedMotoServer
from moto.sqs import models

port, record_path = int(sys.argv[1]), sys.argv[2]

core_utils.unix_time = lambda dt=None: dt.timestamp() if dt else time.time()
core_utils.unix_time_millis = lambda dt=None: core_utils.unix_time(dt) * 1000.0
models.unix_time = core_utils.unix_time
models.unix_time_millis = core_utils.unix_time_millis
models.Queue.approximate_number_of_messages = property(lambda q: len(q._messages))
models.Queue.approximate_number_of_messages_delayed = property(lambda q: 0)
models.Queue.approximate_number_of_messages_not_visible = property(lambda q: 0)

_out = open(record_path, "w", buffering=1 << 16)
_lock = threading.Lock()


def _line(accepted_ms, body):
    try:
        try:
            env = json.loads(base64.b64decode(body, validate=True))
        except ValueError:
            env = json.loads(body)
        h = env["headers"]
        if isinstance(h.get("sqsbeat_scheduled_at"), str):
            at = h["sqsbeat_scheduled_at"].replace("Z", "+00:00")
            sched_ms = datetime.fromisoformat(at).timestamp() * 1000.0
        else:
            sched_ms = float(h["x_scheduled_at"]) * 1000.0
        entry = h.get("periodic_task_name") or h.get("x_entry") or "?"
        return f"{accepted_ms:.3f},{sched_ms:.3f},{entry}\n"
    except (ValueError, KeyError, TypeError):
        return ""


def _record(messages):
    lines = "".join(_line(m.sent_timestamp, m.body) for m in messages)
    with _lock:
        _out.write(lines)


_send = models.SQSBackend.send_message


# SendMessageBatch goes through send_message once per entry.
def send_message(self, *a, **kw):
    m = _send(self, *a, **kw)
    _record([m])
    return m


models.SQSBackend.send_message = send_message


def _flush():
    while True:
        time.sleep(0.5)
        with _lock:
            _out.flush()


threading.Thread(target=_flush, daemon=True).start()
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
print(f"moto_fast on 127.0.0.1:{port}", flush=True)


def _stop(*_):
    with _lock:
        _out.flush()
    sys.exit(0)


signal.signal(signal.SIGTERM, _stop)
signal.signal(signal.SIGINT, _stop)
threading.Event().wait()
