#!/bin/bash
# The HTTP figure of docs/benchmarks.md: for each payroll-ledger binary given, in turn, a fresh
# database, `serve` (with its projectors unless SERVE_ARGS=--no-projectors), 2,000 employees
# hired through the API, a 5 s warm-up, then one 15 s `wrk -t2 -c16` run POSTing pay-rate
# changes to random employees, each request with its own Idempotency-Key.
#   docs/bench/http/ab.sh ./old/payroll-ledger ./target/release/payroll-ledger ...
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust), wrk, python3; uses database httpb.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/payroll-http-bench}
mkdir -p "$WORK" && cd "$WORK"
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/httpb PAYROLL_LEDGER_MASTER_KEY_FILE=$WORK/master.key
export EMPLOYEES=$WORK/employees.txt
for B in "$@"; do
  pkill -f "payroll-ledger serve"; sleep 1
  psql -h 127.0.0.1 -U postgres -qc "drop database if exists httpb with (force)" -c "create database httpb" 2>/dev/null
  [ -f master.key ] || "$B" master-key --out master.key >/dev/null
  "$B" migrate >/dev/null
  ORG=$(python3 -c "import uuid; print(uuid.uuid4())")
  export TOKEN=$("$B" keys create --org "$ORG" --role admin --holder bench@example.com 2>/dev/null | tail -1)
  PAYROLL_LEDGER_BIND=127.0.0.1:18080 nohup "$B" serve ${SERVE_ARGS:-} > serve.log 2>&1 &
  sleep 3
  python3 "$HERE/setup.py" http://127.0.0.1:18080 "$TOKEN" 2000 "$EMPLOYEES" >/dev/null
  RUN=w$RANDOM wrk -t2 -c16 -d5s -s "$HERE/payrate.lua" http://127.0.0.1:18080 >/dev/null 2>&1
  sleep 5
  echo -n "$B: "
  RUN=m$RANDOM wrk -t2 -c16 -d15s --latency -s "$HERE/payrate.lua" http://127.0.0.1:18080 2>&1 \
    | grep -E "Requests/sec|50%|99%|Non-2xx" | tr -s ' ' | tr '\n' ' '
  echo
done
pkill -f "payroll-ledger serve"
