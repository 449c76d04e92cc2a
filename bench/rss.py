"""Peak memory of a command: `peak_rss(argv, env, cwd)` runs it once and returns the peak
RSS of that process alone (its own `ru_maxrss`), with its wall time and stdout."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import BenchError

# Runs the command and writes "<peak RSS KiB> <exit code>" to argv[1]. The child's
# ru_maxrss is at least the RSS of the process that forked it (Linux keeps the high-water
# mark of the address space it replaces at exec), so the command is forked from this small
# fresh interpreter, never from the benchmark process with its caches.
LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_pid, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def peak_rss(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, float, str]:
    """(peak RSS in KiB, wall seconds, stdout) of one run of `argv`, from its own rusage."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as report:
        began = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCHER, report.name, *argv],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - began
        rss_kib, code = (int(x) for x in report.read().split())
    if proc.returncode != 0 or code != 0:
        raise BenchError(
            f"{' '.join(argv[1:])}: exit {code}\nstdout: {proc.stdout.strip()[:500]}\n"
            f"stderr: {proc.stderr.strip()[:2000]}"
        )
    return rss_kib, wall, proc.stdout  # ru_maxrss is in KiB on Linux
