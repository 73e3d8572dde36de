"""One fresh process measured from the outside: wall time, CPU time and peak RSS, as `/usr/bin/time` gives them.

    run = measure([sys.executable, "-m", "lipsync", ...], cwd, env)   # Run(seconds, cpu_seconds, peak_mb, ...)

A small launcher process starts the measured one and waits for it with wait4: wall time from its
start to its end; CPU time is user + system of the process and of the children it waited for
(ffmpeg); peak RSS is ru_maxrss, which Linux gives as the largest single process of that tree
(`/usr/bin/time -f %M`'s figure). The launcher is needed because Linux carries the high-water mark
of the process that calls exec into the new program's ru_maxrss: a child spawned straight from a
benchmark that holds paddle would report at least the benchmark's own peak.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

MB = 1024  # ru_maxrss is in KiB on Linux
STDERR_KEPT = 3000  # characters of the measured process's stderr kept for error messages

# The launcher (argv: figures file, command...): runs the command, waits for it, writes its figures as JSON.
LAUNCHER = """
import ctypes, json, os, signal, subprocess, sys, time
def end_with_us():  # the measured process gets SIGTERM if this launcher dies (prctl PR_SET_PDEATHSIG)
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)
began = time.perf_counter()
child = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=end_with_us)
_, status, usage = os.wait4(child.pid, 0)
figures = {"seconds": time.perf_counter() - began, "cpu_seconds": usage.ru_utime + usage.ru_stime,
           "peak_kb": usage.ru_maxrss, "returncode": os.waitstatus_to_exitcode(status)}
child.returncode = figures["returncode"]
with open(sys.argv[1], "w") as out:
    json.dump(figures, out)
"""


@dataclass
class Run:
    """One fresh process: its wall time, CPU time (its own and its waited-for children's), peak RSS (MB), exit."""

    seconds: float
    cpu_seconds: float
    peak_mb: float
    returncode: int
    stderr: str = ""


def measure(cmd: Sequence[str], cwd: Path, env: Mapping[str, str]) -> Run:
    """Run one fresh process to its end through LAUNCHER: wall time, CPU time and peak RSS (see the module doc)."""
    with tempfile.TemporaryDirectory(prefix="lipsync-measure-") as tmp:
        figures, err = Path(tmp) / "figures.json", Path(tmp) / "stderr"
        with err.open("wb") as stderr:
            launcher = [sys.executable, "-c", LAUNCHER, str(figures), *cmd]
            done = subprocess.run(launcher, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stderr=stderr,
                                  check=False)  # fmt: skip
        text = err.read_text(errors="replace")[-STDERR_KEPT:]
        if done.returncode != 0 or not figures.exists():
            return Run(0.0, 0.0, 0.0, done.returncode or 1, text)
        found = json.loads(figures.read_text())
    return Run(found["seconds"], found["cpu_seconds"], found["peak_kb"] / MB, found["returncode"], text)
