#!/usr/bin/env python3
"""timed.py OUT.json -- COMMAND [ARGS...]

Runs COMMAND (stdin/stdout/stderr inherited) and writes to OUT.json its exit status, wall
time from just before the fork to its exit ("seconds"), peak RSS ("maxrss_kb", getrusage of
the waited-for child: VmHWM at exit) and CPU time ("cpu_s", user + system). Exits with the
command's status. Used by bench/run for the rows whose process exits by itself (kcat).
"""
import json
import resource
import subprocess
import sys
import time

if len(sys.argv) < 4 or sys.argv[2] != "--":
    sys.exit("usage: timed.py OUT.json -- COMMAND [ARGS...]")
out, cmd = sys.argv[1], sys.argv[3:]
t0 = time.monotonic()
proc = subprocess.Popen(cmd)
rc = proc.wait()
t1 = time.monotonic()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out, "w") as f:
    json.dump({"rc": rc, "seconds": t1 - t0, "maxrss_kb": ru.ru_maxrss,
               "cpu_s": ru.ru_utime + ru.ru_stime}, f)
sys.exit(rc if rc >= 0 else 128 - rc)
