#!/usr/bin/env bash
# Failover: two replicas on one PostgreSQL, an every-1 s entry and a real
# Celery worker; the leader is SIGKILLed KILLS times, and each kill prints
# the time to the first fire sent by the new leader, then the totals (fires
# expected, executed, lost, executed twice).
#
#   KILLS=20 benches/failover.sh
#
# It is the test tests/it/failover.rs run with more kills (the test suite
# runs 3), through scripts/test, which sets up the venv and a throwaway
# PostgreSQL when DATABASE_URL is unset.
set -euo pipefail
cd "$(dirname "$0")/.."
SQSBEAT_FAILOVER_KILLS=${KILLS:-20} exec scripts/test --test it kill_9_of_the_leader_loses_no_fire -- --nocapture
