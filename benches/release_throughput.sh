#!/usr/bin/env bash
# Release throughput: N one-off jobs due at once in PostgreSQL, among TOTAL
# pending jobs (the rest due in 14 days), released by R replicas into the
# benchmark sink (examples/sqs_sink.rs), which only counts, so the figure is
# sqsbeat + PostgreSQL, not the endpoint.
#
#   DATABASE_URL=postgres://... N=100000 R=1 benches/release_throughput.sh
#   DATABASE_URL=postgres://... N=100000 TOTAL=1000000 R=2 benches/release_throughput.sh
#
# Reports jobs/s between the first and the last released_at (after
# TIMEOUT seconds, default 600, of what was released by then, and fails),
# and the CPU seconds each part used.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?set DATABASE_URL to a PostgreSQL server the benchmark may use}"
N=${N:-100000}
R=${R:-1}
TOTAL=${TOTAL:-$N}
BIN=${BIN:-target/release/sqsbeat}
[ -x "$BIN" ] || cargo build --release --quiet --bin sqsbeat
cargo build --release --quiet --example sqs_sink
work=$(mktemp -d)
schema="bench_$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# CPU seconds of every PostgreSQL process on this host (other databases'
# work included: read it as an upper bound).
pg_cpu() { local t=0 p; for p in $(pgrep -x postgres); do t=$(awk -v t="$t" -v hz="$(getconf CLK_TCK)" '{ print t + ($14 + $15 + $16 + $17) / hz }' "/proc/$p/stat" 2>/dev/null || echo "$t"); done; echo "$t"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
target/release/examples/sqs_sink "$port" "$work/sink.json" >/dev/null 2>&1 &
pids+=($!)
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true
export SQSBEAT_SQS_REGION=us-east-1 SQSBEAT_SQS_ENDPOINT_URL="http://127.0.0.1:$port"
export SQSBEAT_DATABASE_URL="$DATABASE_URL" SQSBEAT_DATABASE_SCHEMA="$schema" SQSBEAT_LOG=warn
printf '[entries.idle]\ntask = "bench.idle"\nevery = "1d"\nenabled = false\n' > "$work/s.toml"
"$BIN" migrate >/dev/null
psql -q "$DATABASE_URL" -c "INSERT INTO $schema.jobs (id, task, kwargs, queue, due_at)
  SELECT gen_random_uuid(), 'bench.job', jsonb_build_object('i', g), 'bench', now() FROM generate_series(1, $N) g"
if [ "$TOTAL" -gt "$N" ]; then
  psql -q "$DATABASE_URL" -c "INSERT INTO $schema.jobs (id, task, kwargs, queue, due_at)
    SELECT gen_random_uuid(), 'bench.later', jsonb_build_object('i', g), 'bench', now() + interval '14 days' + g * interval '1 ms'
    FROM generate_series(1, $TOTAL - $N) g"
  psql -q "$DATABASE_URL" -c "VACUUM ANALYZE $schema.jobs"
fi
echo "inserted $N jobs due now among $TOTAL pending; starting $R releasing replica(s)" >&2
# Each replica its own status-page port: on the default one, a second
# replica (or any sqsbeat already running on this host) exits at start.
for i in $(seq 1 "$R"); do
  SQSBEAT_HTTP_ADDR="127.0.0.1:$(free_port)" "$BIN" run "$work/s.toml" 2>"$work/run-$i.log" &
  pids+=($!)
done
start=$(date +%s)
timed_out=0
pg_cpu0=$(pg_cpu)
# Done when no due job is pending or being released. EXISTS, not count(*):
# counting a million due rows every half second was a load of its own.
while :; do
  busy=$(psql -qtA "$DATABASE_URL" -c "SELECT EXISTS (SELECT 1 FROM $schema.jobs WHERE status = 'pending' AND due_at <= now())
    OR EXISTS (SELECT 1 FROM $schema.jobs WHERE status = 'releasing')")
  [ "$busy" = f ] && break
  if [ $(( $(date +%s) - start )) -gt "${TIMEOUT:-600}" ]; then
    left=$(psql -qtA "$DATABASE_URL" -c "SELECT count(*) FROM $schema.jobs WHERE status IN ('pending', 'releasing') AND due_at <= now()")
    echo "not done after ${TIMEOUT:-600} s ($left pending)" >&2
    timed_out=1; break
  fi
  sleep 0.5
done
pg_cpu1=$(pg_cpu)
for i in $(seq 1 "$R"); do
  if ! kill -0 "${pids[$i]}" 2>/dev/null; then
    echo "replica $i exited during the run:" >&2; tail -5 "$work/run-$i.log" >&2; exit 1
  fi
done
cpu=$(for i in $(seq 1 "$R"); do cpu_s "${pids[$i]}"; echo; done | paste -sd' ')
psql -qtA "$DATABASE_URL" -c "SELECT count(*), round(extract(epoch FROM max(released_at) - min(released_at))::numeric, 3),
  round((count(*) / greatest(extract(epoch FROM max(released_at) - min(released_at)), 0.001))::numeric)
  FROM $schema.jobs WHERE status = 'released'" | {
  IFS='|' read -r n secs rate
  sleep 0.7
  sunk=$(python3 -c "import json; print(json.load(open('$work/sink.json'))['messages'])")
  echo "release: N=$N of TOTAL=$TOTAL replicas=$R released=$n in ${secs}s = ${rate} jobs/s; sink accepted $sunk messages"
  echo "cpu s: sqsbeat $cpu; sink $(cpu_s "${pids[0]}"); postgres $(awk -v a="$pg_cpu0" -v b="$pg_cpu1" 'BEGIN { printf "%.1f", b - a }'); load $(cut -d' ' -f1-3 /proc/loadavg)"
}
exit "$timed_out"
