#!/usr/bin/env bash
# The benchmark sink's own ceiling: examples/sqs_sink.rs driven by its
# --load mode (raw HTTP/1.1 SendMessageBatch of 10 x 1.3 KB, no SDK), with
# and without the per-message record the benchmarks use.
#
#   benches/sink_ceiling.sh            # 10 s, 16 connections
#   SECS=10 CONNS=4 benches/sink_ceiling.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
CONNS=${CONNS:-16}
cargo build --release --quiet --example sqs_sink
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
for record in no yes; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if [ "$record" = yes ]; then
    target/release/examples/sqs_sink "$port" "$work/stats.json" "$work/record.csv" >/dev/null &
  else
    target/release/examples/sqs_sink "$port" "$work/stats.json" >/dev/null &
  fi
  pid=$!
  sleep 0.5
  printf 'record=%s: ' "$record"
  target/release/examples/sqs_sink --load "$port" "$SECS" "$CONNS"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
