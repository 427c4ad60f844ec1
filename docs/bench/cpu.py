#!/usr/bin/env python3
"""Where the CPU goes over a window: cores used per process group, PostgreSQL's backends
grouped by their application_name (give each process its own PGAPPNAME), this project's
processes by their subcommand, every other process by its name.

    python3 docs/bench/cpu.py SECONDS

Reads /proc/PID/stat (utime + stime) of every process and /proc/stat at the start and the
end of the window; a process that starts or ends inside the window is not counted. Needs
psql on PATH and PostgreSQL at 127.0.0.1:5432 (user postgres) to name the backends."""
import os
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def processes():
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            command = open(f"/proc/{pid}/cmdline").read().replace("\0", " ").split()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(pid)] = (name, command, int(fields[11]) + int(fields[12]))
    return found


def machine():
    fields = list(map(int, open("/proc/stat").readline().split()[1:]))
    return fields[3] + fields[4], sum(fields)


def backends():
    query = "select pid, coalesce(nullif(application_name, ''), backend_type) from pg_stat_activity"
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-AtF|", "-c", query],
                         capture_output=True, text=True).stdout
    return {int(line.split("|")[0]): line.split("|")[1] for line in out.splitlines() if "|" in line}


def group(pid, name, command, names):
    if name == "postgres":
        return "postgres: " + names.get(pid, "other")
    if any("payroll-ledger" in part for part in command[:1]) and len(command) > 1:
        return "payroll-ledger " + command[1]
    return name


seconds = float(sys.argv[1])
before, idle_before, names = processes(), machine(), backends()
time.sleep(seconds)
after, idle_after = processes(), machine()
names.update(backends())
cores = {}
for pid, (name, command, ticks) in after.items():
    if pid in before and ticks > before[pid][2]:
        key = group(pid, name, command, names)
        cores[key] = cores.get(key, 0) + (ticks - before[pid][2]) / HZ / seconds
idle, total = idle_after[0] - idle_before[0], idle_after[1] - idle_before[1]
print(f"{seconds:g} s; the machine {os.cpu_count() * (1 - idle / total):.2f} of {os.cpu_count()} cores busy")
for key, used in sorted(cores.items(), key=lambda item: -item[1]):
    if used >= 0.005:
        print(f"{used:6.3f} cores  {key}")
