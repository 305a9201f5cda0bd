#!/usr/bin/env bash
# CLI latency at scale: M pending jobs (default 1 000 000) spread over 30
# days, then the wall time of `sqsbeat schedule` and `sqsbeat pending`
# (median of K runs each, whole process: start, connect, query, print).
#
#   DATABASE_URL=postgres://... M=1000000 K=7 benches/cli_latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?set DATABASE_URL to a PostgreSQL server the benchmark may use}"
M=${M:-1000000}
K=${K:-7}
BIN=${BIN:-target/release/sqsbeat}
[ -x "$BIN" ] || cargo build --release --quiet --bin sqsbeat
schema="bench_cli_$$"
trap 'psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true' EXIT
export SQSBEAT_DATABASE_URL="$DATABASE_URL" SQSBEAT_DATABASE_SCHEMA="$schema" SQSBEAT_LOG=warn
"$BIN" migrate >/dev/null
t0=$(date +%s.%N)
psql -q "$DATABASE_URL" -c "INSERT INTO $schema.jobs (id, task, kwargs, queue, due_at)
  SELECT gen_random_uuid(), 'bench.task_' || (g % 10), jsonb_build_object('i', g), 'bench',
         now() + interval '1 hour' + (g::float / $M) * interval '30 days'
  FROM generate_series(1, $M) g; ANALYZE $schema.jobs;"
echo "inserted $M pending jobs in $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-6) s" >&2

median_ms() {
  local runs=() s e
  for _ in $(seq 1 "$K"); do
    s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N)
    runs+=($(( (e - s) / 1000000 )))
  done
  printf '%s\n' "${runs[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " ms (min " a[1] ", max " a[NR] ")"}'
}
echo "schedule --in 14d:                          $(median_ms "$BIN" schedule bench.task_1 --in 14d --kwargs '{"a": 1}')"
echo "pending (first 100 by due):                 $(median_ms "$BIN" pending)"
echo "pending --task --due-before (100):          $(median_ms "$BIN" pending --task bench.task_3 --due-before "$(date -u -d '+20 days' +%Y-%m-%dT%H:%M:%SZ)")"
echo "pending --due-after +15d --limit 1000 json: $(median_ms "$BIN" pending --due-after "$(date -u -d '+15 days' +%Y-%m-%dT%H:%M:%SZ)" --limit 1000 --output json)"
echo "show ID:                                    $(median_ms "$BIN" show "$(psql -qtA "$DATABASE_URL" -c "SELECT id FROM $schema.jobs LIMIT 1")")"
