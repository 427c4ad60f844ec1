#!/bin/bash
# The HTTP figure of docs/benchmarks.md: for each payroll-ledger binary given, in turn, a fresh
# database, `serve` (with its projectors unless SERVE_ARGS=--no-projectors), 2,000 employees
# hired through the API, a 5 s warm-up (and its projections caught up), then one 15 s
# `wrk -t2 -c16` run POSTing pay-rate changes to random employees, each request with its own
# Idempotency-Key; then how far the slowest projection was behind the log when the run
# ended, and how long it took to catch up (the rate the read tables keep up with is the
# run's requests over the run and that time).
#   docs/bench/http/ab.sh ./old/payroll-ledger ./target/release/payroll-ledger ...
# Each server is the one this script started, stopped by its pid: a server left on the port
# (or one whose name no pattern matches) would answer for the next binary.
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust), wrk, python3, curl; uses
# database httpb.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/payroll-http-bench}
API=http://127.0.0.1:18080
mkdir -p "$WORK" && cd "$WORK"
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/httpb PAYROLL_LEDGER_MASTER_KEY_FILE=$WORK/master.key
export EMPLOYEES=$WORK/employees.txt
trap '[ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null' EXIT
LAG="select coalesce((select max(global_position) from ledger.events) - min(global_position), 0) from ledger.projection_checkpoints"
# Waits (at most 5 minutes) until every projection has applied the whole log.
caught_up() {
  for _ in $(seq 1500); do [ "$(psql "$DATABASE_URL" -Atc "$LAG")" = 0 ] && return; sleep 0.2; done
  echo "the projections did not catch up in 5 minutes: see $WORK/serve.log" >&2; exit 1
}
for B in "$@"; do
  if curl -s -o /dev/null "$API/health"; then
    echo "something already answers on $API: stop it first" >&2; exit 1
  fi
  psql -h 127.0.0.1 -U postgres -qc "drop database if exists httpb with (force)" -c "create database httpb" 2>/dev/null
  [ -f master.key ] || "$B" master-key --out master.key >/dev/null
  "$B" migrate >/dev/null
  ORG=$(python3 -c "import uuid; print(uuid.uuid4())")
  export TOKEN=$("$B" keys create --org "$ORG" --role admin --holder bench@example.com 2>/dev/null | tail -1)
  PAYROLL_LEDGER_BIND=127.0.0.1:18080 "$B" serve ${SERVE_ARGS:-} > serve.log 2>&1 &
  SERVER=$!
  for _ in $(seq 50); do curl -s -o /dev/null "$API/health" && break; sleep 0.2; done
  kill -0 "$SERVER" 2>/dev/null || { echo "$B serve did not start:" >&2; cat serve.log >&2; exit 1; }
  python3 "$HERE/setup.py" "$API" "$TOKEN" 2000 "$EMPLOYEES" >/dev/null
  RUN=w$RANDOM wrk -t2 -c16 -d5s -s "$HERE/payrate.lua" "$API" >/dev/null 2>&1
  caught_up
  echo -n "$B: "
  RUN=m$RANDOM wrk -t2 -c16 -d15s --latency -s "$HERE/payrate.lua" "$API" 2>&1 \
    | grep -E "Requests/sec| 50% | 99% |Non-2xx|requests in" | tr -s ' ' | tr '\n' ' '
  BEHIND=$(psql "$DATABASE_URL" -Atc "$LAG"); START=$(date +%s.%N)
  caught_up
  echo "| projections behind at the end: $BEHIND events, caught up after $(echo "$(date +%s.%N) - $START" | bc | cut -c1-4) s"
  kill "$SERVER"; wait "$SERVER"
done
