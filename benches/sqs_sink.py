#!/usr/bin/env python3
"""A minimal SQS sink for benchmarks: accepts messages and counts them.

Speaks the AWS JSON 1.0 protocol (X-Amz-Target: AmazonSQS.*) for
GetQueueUrl, CreateQueue, GetQueueAttributes, SendMessage and
SendMessageBatch, on loopback, with HTTP/1.1 keep-alive. It stores
nothing: each accepted message is counted (and its arrival time kept, for
throughput), so the endpoint is never what a benchmark measures. Written
for sqsbeat's benchmarks; not an SQS emulator.

  python3 benches/sqs_sink.py PORT [STATS_FILE]

STATS_FILE (JSON, rewritten each second): {"messages": N, "first": t, "last": t}.
"""
import hashlib
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
stats = {"messages": 0, "first": None, "last": None, "requests": 0}


def accepted(n):
    now = time.time()
    with lock:
        stats["messages"] += n
        stats["requests"] += 1
        stats["first"] = stats["first"] or now
        stats["last"] = now


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        req = json.loads(self.rfile.read(length) or b"{}")
        action = self.headers.get("X-Amz-Target", "").split(".")[-1]
        host = self.headers.get("Host", "127.0.0.1")
        if action in ("GetQueueUrl", "CreateQueue"):
            return self.reply({"QueueUrl": f"http://{host}/000000000000/{req.get('QueueName', 'q')}"})
        if action == "GetQueueAttributes":
            return self.reply({"Attributes": {}})
        if action == "SendMessage":
            accepted(1)
            md5 = hashlib.md5(req.get("MessageBody", "").encode()).hexdigest()
            return self.reply({"MessageId": str(uuid.uuid4()), "MD5OfMessageBody": md5})
        if action == "SendMessageBatch":
            entries = req.get("Entries", [])
            accepted(len(entries))
            ok = [{"Id": e["Id"], "MessageId": str(uuid.uuid4()),
                   "MD5OfMessageBody": hashlib.md5(e.get("MessageBody", "").encode()).hexdigest()} for e in entries]
            return self.reply({"Successful": ok, "Failed": []})
        return self.reply({"__type": "com.amazonaws.sqs#UnsupportedOperation", "message": action}, 400)


def dump(path):
    while True:
        time.sleep(1)
        with lock:
            snap = dict(stats)
        with open(path + ".tmp", "w") as f:
            json.dump(snap, f)
        import os
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    port = int(sys.argv[1])
    if len(sys.argv) > 2:
        threading.Thread(target=dump, args=(sys.argv[2],), daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"sqs_sink on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
