#!/usr/bin/env bash
# What idle replicas cost the application's PostgreSQL: R replicas of
# sqsbeat with one hourly entry and no jobs, for SECS seconds. Reports the
# transaction ids the server assigned (txid_current() before and after,
# minus the two the measurement itself takes), commits (pg_stat_database),
# and each replica's CPU (utime + stime from /proc, in % of one core).
#
#   DATABASE_URL=postgres://... R=1 SECS=30 benches/idle_cost.sh
#   DATABASE_URL=postgres://... R=3 BIN=/path/to/old/sqsbeat benches/idle_cost.sh
#
# The measurement needs the server to itself: other clients' transactions
# would be counted too.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?set DATABASE_URL to a PostgreSQL server the benchmark may use}"
R=${R:-1}
SECS=${SECS:-30}
BIN=${BIN:-target/release/sqsbeat}
[ -x "$BIN" ] || cargo build --release --quiet --bin sqsbeat
work=$(mktemp -d)
schema="idle_$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true
# No SQS call happens at idle; an endpoint that refuses connections will do.
export SQSBEAT_SQS_REGION=us-east-1 SQSBEAT_SQS_ENDPOINT_URL=http://127.0.0.1:9
export SQSBEAT_DATABASE_URL="$DATABASE_URL" SQSBEAT_DATABASE_SCHEMA="$schema" SQSBEAT_LOG=warn
printf '[entries.hourly]\ntask = "bench.hourly"\ncron = "0 * * * *"\n' > "$work/s.toml"
"$BIN" migrate >/dev/null
for i in $(seq 1 "$R"); do
  SQSBEAT_HTTP_ADDR=127.0.0.1:0 "$BIN" run "$work/s.toml" 2>"$work/r$i.log" &
  pids+=($!)
done
# Let every replica start, elect and settle before measuring.
sleep 5
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
db=$(psql -Atq "$DATABASE_URL" -c "SELECT current_database()")
commits() { psql -Atq "$DATABASE_URL" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'"; }
declare -A before
for p in "${pids[@]}"; do before[$p]=$(cpu "$p"); done
x0=$(psql -Atq "$DATABASE_URL" -c "SELECT txid_current()")
c0=$(commits)
sleep "$SECS"
x1=$(psql -Atq "$DATABASE_URL" -c "SELECT txid_current()")
c1=$(commits)
xids=$((x1 - x0 - 1))
echo "idle cost: $R replica(s), ${SECS}s, $("$BIN" --version)"
echo "  xids assigned: $xids ($(awk -v x="$xids" -v s="$SECS" 'BEGIN { printf "%.1f", x / s }')/s)"
echo "  commits (all transactions, read-only included): $((c1 - c0)) ($(awk -v x="$((c1 - c0))" -v s="$SECS" 'BEGIN { printf "%.1f", x / s }')/s)"
for p in "${pids[@]}"; do
  used=$(( $(cpu "$p") - before[$p] ))
  echo "  replica $p CPU: $(awk -v u="$used" -v t="$ticks" -v s="$SECS" 'BEGIN { printf "%.2f", 100 * u / t / s }')% of a core"
done
