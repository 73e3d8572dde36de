"""Batch throughput: the same picture jobs with 1 and with 2 local worker processes (threads split between them),
in jobs per minute, the workers' network loading included (`python benchmarks/batch_bench.py --help`)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from workload import make_photo, make_speech, make_weights, machine

DEFAULT_JOBS = 6
DEFAULT_SECONDS = 4.0  # of speech per job: 100 frames at 25 fps
DEFAULT_WORKERS = (1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="speech per job")
    parser.add_argument("--workers", type=int, nargs="+", default=list(DEFAULT_WORKERS))
    parser.add_argument("--detector", default="sfd", choices=("sfd", "haar"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lipsync-batch-bench-") as tmp:
        folder = Path(tmp)
        jobs = _jobs(folder, args.jobs, args.seconds, args.detector)
        figures = {"machine": machine(), "jobs": args.jobs, "speech_s": args.seconds, "runs": []}
        for workers in args.workers:
            figures["runs"].append(_time(jobs, folder / f"out-{workers}", workers))
            print(json.dumps(figures["runs"][-1]), flush=True)
    print(json.dumps(figures, indent=1))


def _jobs(folder: Path, count: int, seconds: float, detector: str) -> list:
    models = folder / "models"
    models.mkdir()
    s3fd = make_weights(models)
    os.environ.update(LIPSYNC_MODELS=str(models), LIPSYNC_CACHE=str(folder / "cache"), HF_HUB_OFFLINE="1")
    photo = make_photo(folder)
    rows = []
    for index in range(count):
        speech = make_speech(folder, seconds + 0.1 * index, f"speech{index}.wav")  # no two jobs alike
        rows.append({"face": str(photo), "audio": str(speech), "outfile": f"job{index}.mp4", "device": "cpu",
                     "face_detector": detector, "detector_weights": str(s3fd)})  # fmt: skip
    return rows


def _time(jobs: list, outdir: Path, workers: int) -> dict:
    from lipsync import batch

    started = time.perf_counter()
    rows = batch.run(jobs, outdir, workers=workers)
    wall = time.perf_counter() - started
    assert all(row.status == batch.DONE for row in rows), rows
    load = os.getloadavg()[0]
    return {"workers": workers, "wall_s": round(wall, 1), "jobs_per_min": round(len(jobs) * 60 / wall, 2),
            "frames": sum(row.frames for row in rows), "load_avg_1min_after": round(load, 2),
            "job_seconds": [round(row.seconds, 1) for row in rows]}  # fmt: skip


if __name__ == "__main__":
    main()
