#!/usr/bin/env python3
"""Backend CPU per call of functions shaped like ledger.append_group (docs/benchmarks.md, 2026-11-27).

Usage: DB=mydb [KEYS=1] python3 docs/bench/pgbench/group-cpu.py FUNC[,FUNC...] CALLS MEMBERS [ROUNDS]

Each FUNC (in schema ledger, with append_group's arguments: e.g. an earlier version made under
another name and owned by ledger_appender) is called CALLS times a round from one psql session,
MEMBERS one-event members to random streams of 2,000 each call (KEYS=1: each member with an
idempotency key), the functions alternated over ROUNDS (default 3). The backend's user and
system CPU (/proc/PID/stat: run this on the database's machine) is read before and after the
calls. psql connects as PGHOST, PGUSER etc. say. ~215 us of each call is psql parsing its
literal arrays: compare functions, not totals.
"""
import os
import random
import re
import statistics
import subprocess
import sys
import uuid

if len(sys.argv) < 4:
    sys.exit(__doc__)
functions = sys.argv[1].split(",")
calls, members = int(sys.argv[2]), int(sys.argv[3])
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
database = os.environ.get("DB") or sys.exit("set DB to the database to call the functions in")
keys = os.environ.get("KEYS") == "1"
ticks_per_second = os.sysconf("SC_CLK_TCK")


def each(text):
    return ",".join([text] * members)


def call(function):
    streams = [random.randint(1, 2000) for _ in range(members)]
    stream_ids = ",".join("'00000000-0000-0000-0000-%012d'" % s for s in streams)
    lock_keys = ",".join(str(s) for s in streams)
    key_list = ",".join("'%s'" % uuid.uuid4() for _ in range(members)) if keys else each("null")
    hashes = each("'\\x00'") if keys else each("null")
    arguments = [
        each("1"), each("'{\"actor\":\"bench\",\"request\":\"r\"}'"), key_list + "]::text[", hashes + "]::bytea[",
        each("'00000000-0000-0000-0000-000000000001'") + "]::uuid[", each("'bench'"), stream_ids + "]::uuid[",
        each("null") + "]::bigint[", each("1"), lock_keys + "]::bigint[", each("gen_random_uuid()") + "]::uuid[",
        each("'Happened'"), each("1"), each("'{\"amount\":\"12.50\",\"note\":\"some text of a payload\"}'"),
    ]
    return "select count(*) from ledger.%s(%s);" % (function, ", ".join("array[%s]" % a for a in arguments))


cpu = "\\! cut -d' ' -f14,15 /proc/$PID/stat"
results = {function: [] for function in functions}
for _ in range(rounds):
    for function in functions:
        script = ["select pg_backend_pid() as pid \\gset", "\\setenv PID :pid", "set synchronous_commit = off;"]
        script += [call(function) for _ in range(50)]  # plans made and cached first
        script += [cpu] + [call(function) for _ in range(calls)] + [cpu]
        run = subprocess.run(["psql", "-d", database, "-qAt", "-v", "ON_ERROR_STOP=1", "-f", "-"],
                             input="\n".join(script), capture_output=True, text=True)
        ticks = [sum(map(int, line.split())) for line in run.stdout.splitlines() if re.fullmatch(r"\d+ \d+", line)]
        if run.returncode != 0 or len(ticks) != 2:
            sys.exit("ledger.%s: %s" % (function, run.stderr.strip() or "no CPU figures read"))
        results[function].append((ticks[1] - ticks[0]) * 1e6 / ticks_per_second / calls)
for function, figures in results.items():
    print(function, " ".join("%.0f" % f for f in figures), "median %.0f µs/call" % statistics.median(figures))
