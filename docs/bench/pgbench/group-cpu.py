#!/usr/bin/env python3
# Backend CPU per call of ledger.append_group-shaped functions (docs/benchmarks.md, 2026-11-27).
# Usage: DB=mydb [KEYS=1] python3 docs/bench/pgbench/group-cpu.py FUNC[,FUNC...] CALLS MEMBERS [ROUNDS]
# Each FUNC (in schema ledger, append_group's arguments; e.g. a copy of an earlier version made
# under another name and owned by ledger_appender) is called CALLS times per round from one psql
# session, MEMBERS one-event members to random streams of 2,000, alternated over ROUNDS; the
# backend's user+system CPU ticks (/proc/PID/stat, so run it on the database's machine) are read
# before and after. ~215 us of each call is psql's literal arrays; compare functions, not totals.
import sys, subprocess, random, re, statistics
funcs=sys.argv[1].split(','); N=int(sys.argv[2]); n=int(sys.argv[3]); R=int(sys.argv[4]) if len(sys.argv)>4 else 3
db=__import__('os').environ.get('DB') or sys.exit('set DB to the database to call the functions in')
q="'"
def call(fn, keys=False):
    rep=lambda x: ",".join([x]*n)
    ss=[random.randint(1,2000) for _ in range(n)]
    ids=",".join("'00000000-0000-0000-0000-%012d'" % s for s in ss)
    lk=",".join(str(s) for s in ss)
    kk=",".join("'%s'" % __import__('uuid').uuid4() for _ in range(n)) if keys else rep('null')
    hh=",".join("'\\x00'" for _ in range(n)) if keys else rep('null')
    return ("select count(*) from ledger.%s(array[%s], array[%s], array[%s]::text[], array[%s]::bytea[], array[%s]::uuid[], array[%s], array[%s]::uuid[], array[%s]::bigint[], array[%s], array[%s]::bigint[], array[%s]::uuid[], array[%s], array[%s], array[%s]);" % (
      fn, rep('1'), rep(q+'{"actor":"bench","request":"r"}'+q), kk, hh, rep(q+'00000000-0000-0000-0000-000000000001'+q), rep(q+'bench'+q), ids, rep('null'), rep('1'), lk,
      rep('gen_random_uuid()'), rep(q+'Happened'+q), rep('1'), rep(q+'{"amount":"12.50","note":"some text of a payload"}'+q)))
keys = __import__('os').environ.get('KEYS')=='1'
res={f:[] for f in funcs}
for r in range(R):
    for f in funcs:
        lines=["select pg_backend_pid() as pid \\gset", "\\setenv PID :pid", "set synchronous_commit=off;"]
        lines += [call(f, keys) for _ in range(50)]  # warm
        lines.append("\\! cut -d' ' -f14,15 /proc/$PID/stat")
        lines += [call(f, keys) for _ in range(N)]
        lines.append("\\! cut -d' ' -f14,15 /proc/$PID/stat")
        out=subprocess.run(["psql","-h","127.0.0.1","-U","postgres","-d",db,"-qAt","-f","-"],input="\n".join(lines),capture_output=True,text=True).stdout
        ticks=[sum(map(int,l.split())) for l in out.splitlines() if re.fullmatch(r"\d+ \d+",l)]
        res[f].append((ticks[-1]-ticks[-2])*10000/N)
for f in funcs: print(f, " ".join("%.0f" % x for x in res[f]), "median %.0f µs/call" % statistics.median(res[f]))
