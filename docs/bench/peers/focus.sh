#!/bin/bash
# Run from a copy of ../shared/peers with ours-exec-cached.patch applied (patch -p1 < ours-exec-cached.patch),
# both programs built into $CARGO_TARGET_DIR (or ~/.cache/payroll-ledger/target); then: python3 summarize.py runs/focus.jsonl
# Interleaved passes: raw insert, postgres-es, esrs, ours (store-level read+append), ours with a held state, ours one-event append
T=${CARGO_TARGET_DIR:-$HOME/.cache/payroll-ledger/target}/release
OUT=${OUT:-runs/focus.jsonl}; mkdir -p "$(dirname "$OUT")"
PASSES=${PASSES:-2}
for pass in $(seq 1 $PASSES); do
 for c in 1 16; do
  N=$([ $c = 1 ] && echo 6000 || echo 20000)
  $T/peerbench raw-insert-single $N --conns $c --explicit-tx --runs 1 --out $OUT >/dev/null 2>&1
  $T/peerbench pges-exec $N --conns $c --aggregates 1000 --runs 1 --out $OUT >/dev/null 2>&1
  $T/peerbench esrs-exec $N --conns $c --aggregates 1000 --runs 1 --out $OUT >/dev/null 2>&1
  $T/bench-ours ours-exec $N --conns $c --aggregates 1000 --runs 1 --out $OUT >/dev/null 2>&1
  $T/bench-ours ours-exec-cached $N --conns $c --aggregates 1000 --runs 1 --out $OUT >/dev/null 2>&1
  $T/bench-ours ours-append-single $N --conns $c --runs 1 --out $OUT >/dev/null 2>&1
  echo "pass $pass conns $c done $(date +%T)"
 done
done
