#!/bin/bash
# A/B of one migration in pgbench: one-event appends ($SCRIPT: one-event-append.sql calls
# ledger.append, one-event-append-one.sql ledger.append_one; 2,000 streams, any version)
# against two databases, one migrated up to the migration before $MIGRATION and one with it
# too, alternated at 1 and 16 clients, 6 s each, $ROUNDS rounds in each order.
# Usage: docs/bench/pgbench/before-after.sh 20261126000011
#        SCRIPT=one-event-append-one.sql docs/bench/pgbench/before-after.sh 20261126000013
# (PGHOST/PGUSER as for psql; drops and makes databases ab_before and ab_after, and drops them at
# the end unless KEEP=1; ROUNDS=0 KEEP=1 only makes them, for measuring them some other way.)
set -euo pipefail
MIGRATION=${1:?name the migration by its number, e.g. 20261126000011}
ROUNDS=${ROUNDS:-3}
SCRIPT=${SCRIPT:-one-event-append.sql}
HERE=$(cd "$(dirname "$0")" && pwd)
MIGRATIONS=$HERE/../../../migrations
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
psql -qc "drop database if exists ab_before" -c "drop database if exists ab_after" -c "create database ab_before"
for file in "$MIGRATIONS"/*.sql; do
  [[ $(basename "$file") < $MIGRATION ]] || continue
  psql -d ab_before -q -v ON_ERROR_STOP=1 --single-transaction -f "$file" >/dev/null 2>&1
done
psql -qc "create database ab_after template ab_before"
for file in "$MIGRATIONS"/*.sql; do
  [[ $(basename "$file") < $MIGRATION ]] && continue
  psql -d ab_after -q -v ON_ERROR_STOP=1 --single-transaction -f "$file" >/dev/null 2>&1
done
# What a start of the ledger does after migrating (where the function exists).
for db in ab_before ab_after; do
  psql -d $db -qc "select ledger.check_era()" >/dev/null 2>&1 || true
done
for order in "ab_before ab_after" "ab_after ab_before"; do
  for round in $(seq 1 "$ROUNDS"); do
    for clients in 1 16; do
      for db in $order; do
        tps=$(pgbench -n -f "$HERE/$SCRIPT" -c $clients -j $((clients > 1 ? 2 : 1)) -T 6 $db 2>&1 |
          awk '/^tps/ {print $3}')
        echo "round $round clients $clients $db $tps"
      done
    done
  done
done
[ -n "${KEEP:-}" ] || psql -qc "drop database ab_before" -c "drop database ab_after"
