"""Start-up of a picture job as a user runs it: a fresh process, weights on disk, the export cached, --box given,
on an engine for one job, as the command line's.

The parent notes the wall clock just before it starts the child; the child runs lipsync.run and notes when
each stage starts and when the first generated frames come out, so "start-up" includes the interpreter,
the imports, paddle, the predictors and the first generator batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
STARTUP_RUNS = 3  # fresh processes; the best is kept (the others measure the machine's other work)
CHILD = """
import json, sys, time
spawned = float(sys.argv[1])
marks = {}
def progress(stage, done, total):
    now = time.time() - spawned
    marks.setdefault(stage, now)
    if stage == "lip-syncing" and done > 0:
        marks.setdefault("first frames", now)
sys.path[:0] = [sys.argv[3], sys.argv[4]]  # benchmarks/ and the repository
import lipsync
from workload import peak_rss_mb
spec = json.loads(sys.argv[2])
options = lipsync.LipSyncOptions(**{**spec["options"], "box": tuple(spec["box"])})
engine = lipsync.Engine(single_job=True)  # as the command line runs its one job (lipsync.cli)
result = lipsync.run(spec["face"], spec["speech"], spec["outfile"], options, progress=progress, engine=engine)
print(json.dumps({"marks": marks, "seconds": time.time() - spawned, "frames": result.frames,
                  "notes": list(result.notes), "peak_rss_mb": peak_rss_mb()}))
"""


def face_box(photo: Path) -> Tuple[int, int, int, int]:
    """The face's box as --box takes it (y1, y2, x1, x2), found once by OpenCV's Haar cascade."""
    import cv2

    from lipsync import faces

    x1, y1, x2, y2 = faces.HaarDetector()([cv2.imread(str(photo))])[0]
    return y1, y2, x1, x2


def startup(photo: Path, speech: Path, options: Dict[str, Any], folder: Path, runs: int = STARTUP_RUNS) -> Dict[str, Any]:
    """`runs` fresh processes of the picture job; the one whose first frames came out soonest, and all of them."""
    spec = {"face": str(photo), "speech": str(speech), "outfile": str(folder / "startup.mp4"),
            "options": {**options, "face_detector": "haar"}, "box": list(face_box(photo))}  # fmt: skip
    found: List[Dict[str, Any]] = []
    for _ in range(runs):
        spawned = time.time()
        done = subprocess.run([sys.executable, "-c", CHILD, repr(spawned), json.dumps(spec),
                               str(HERE), str(HERE.parent)], capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"the start-up measurement failed:\n{done.stderr[-3000:]}")
        found.append(json.loads(lines[-1]))
    best = min(found, key=lambda run: run["marks"]["first frames"])
    return {**best, "runs": [run["marks"]["first frames"] for run in found],
            "walls": [run["seconds"] for run in found], "peaks": [run["peak_rss_mb"] for run in found]}
