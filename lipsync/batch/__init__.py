"""Batch dubbing: many jobs (a manifest's rows) on local worker processes or a Ray cluster, each worker loading
the networks once; bad rows are recorded and the batch goes on; finished rows are skipped when it runs again.

    from lipsync import batch
    rows = batch.run("jobs.csv", "out/", workers=2)        # or a list of batch.Job, or of dicts (manifest rows)
    rows = batch.run("jobs.csv", "out/", ray_address="auto")
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .. import cpu
from ..options import LipSyncOptions
from ..types import Progress
from .manifest import Job, ManifestError, jobs_from_rows, place_outputs, read_manifest
from .results import (DONE, FAILED, INTERRUPTED, RESULTS_NAME, SKIPPED, ResultRow, is_complete,
                      remove_stale_partials, write_results)  # fmt: skip
from .work import Outcome

STAGE_JOBS, STAGE_FRAMES = "jobs", "frames"  # what a batch's progress callback is told about
RETRIED_NOTE = "retried: a worker died during an earlier attempt"
NOTE_SEPARATOR = " | "

__all__ = ["run", "Job", "ResultRow", "ManifestError", "read_manifest", "RESULTS_NAME", "DONE", "FAILED", "SKIPPED",
           "INTERRUPTED", "STAGE_JOBS", "STAGE_FRAMES"]  # fmt: skip

JobsLike = Union[str, Path, Iterable[Union[Job, Mapping[str, Any]]]]


def run(jobs: JobsLike, outdir: Union[str, Path], workers: Optional[int] = None, ray_address: Optional[str] = None,
        progress: Optional[Progress] = None, options: Optional[LipSyncOptions] = None) -> List[ResultRow]:  # fmt: skip
    """Run every job, write outdir/results.csv, and return its rows (in manifest order).

    jobs: a manifest path, or Jobs, or rows as a manifest has them (paths relative to the current folder).
    workers: local worker processes (default one per usable GPU, else one using every CPU thread), or Ray actors.
    ray_address: run on Ray ('auto', 'host:port', 'ray://host:10001', or 'local' to start Ray here) instead.
    progress(stage, done, total): stage is "jobs" or "frames". options: the defaults rows' option columns change.
    Raises ManifestError (a LipSyncError) before any work when the jobs are malformed."""
    if workers is not None and workers < 1:
        raise ManifestError(f"workers must be at least 1 (got {workers})")
    out = Path(outdir).expanduser().resolve()
    planned = place_outputs(_jobs(jobs, options), out)
    rows: Dict[int, ResultRow] = {}
    todo = _resume(planned, rows)
    tracker = _Tracker(progress, len(planned), len(rows))
    lock = threading.Lock()

    def on_outcome(job: Job, outcome: Outcome, attempts: int) -> None:
        with lock:
            rows[job.row] = _row(job, outcome, attempts)
        tracker.job_done(job.row)

    try:
        if todo:
            _dispatch(todo, workers, ray_address, on_outcome, tracker)
    finally:
        for job in planned:
            rows.setdefault(job.row, ResultRow.for_job(job, INTERRUPTED))
            remove_stale_partials(job)  # what a killed worker's encoder left (no worker runs now)
        write_results(out / RESULTS_NAME, list(rows.values()))
    return [rows[job.row] for job in planned]


def _jobs(jobs: JobsLike, options: Optional[LipSyncOptions]) -> List[Job]:
    if isinstance(jobs, (str, Path)):
        return read_manifest(jobs, options)
    listed = list(jobs)
    if all(isinstance(job, Job) for job in listed):
        return listed  # type: ignore[return-value]
    if any(isinstance(job, Job) for job in listed):
        raise ManifestError("give either Job objects or rows (dicts), not both")
    return jobs_from_rows(listed, Path.cwd(), options)  # type: ignore[arg-type]


def _resume(jobs: Sequence[Job], rows: Dict[int, ResultRow]) -> List[Job]:
    """The jobs still to run; a job whose output is complete from an earlier run is recorded as skipped."""
    todo = []
    for job in jobs:
        job.outfile.parent.mkdir(parents=True, exist_ok=True)  # the batch's: a failed job must not take it back
        remove_stale_partials(job)
        if is_complete(job):
            rows[job.row] = ResultRow.for_job(job, SKIPPED)
        else:
            todo.append(job)
    return todo


def _row(job: Job, outcome: Outcome, attempts: int) -> ResultRow:
    notes = list(outcome.notes) + ([RETRIED_NOTE] if attempts > 1 and outcome.ok else [])
    return ResultRow.for_job(job, DONE if outcome.ok else FAILED, attempts=attempts, seconds=outcome.seconds,
                             frames=outcome.frames, device=outcome.device, worker=outcome.worker,
                             error=outcome.error, notes=NOTE_SEPARATOR.join(notes))  # fmt: skip


def _dispatch(jobs: List[Job], workers: Optional[int], ray_address: Optional[str], on_outcome,
              tracker: "_Tracker") -> None:  # fmt: skip
    if ray_address:
        from .ray_backend import run_ray

        run_ray(jobs, ray_address, workers, on_outcome)
        return
    from .local import run_local

    gpus = usable_gpus(jobs)
    count = min(workers or max(len(gpus), 1), len(jobs))
    threads = max(1, cpu.cpu_threads() // count)
    run_local(jobs, count, threads, gpus, on_outcome, tracker.event)


def usable_gpus(jobs: Sequence[Job]) -> List[str]:
    """The CUDA device ids local workers may take, one each (none when every job asks for the CPU, or paddle has
    no CUDA). Each worker still checks its own GPU before using it (lipsync.device)."""
    if all(job.options.device == "cpu" for job in jobs):
        return []
    import os

    paddle = _import_paddle()
    if not paddle.is_compiled_with_cuda():
        return []
    try:
        count = paddle.device.cuda.device_count()
    except Exception:  # no driver, no device: the workers run on the CPU
        return []
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return (visible or [str(i) for i in range(count)])[:count]


def _import_paddle():
    """paddle, imported without losing this process's SIGTERM handler (paddle's own aborts the process at once;
    the batch command's stops the workers cleanly and writes results.csv)."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        import paddle

        return paddle
    handler = signal.getsignal(signal.SIGTERM)
    import paddle

    signal.signal(signal.SIGTERM, handler)
    return paddle


class _Tracker:
    """Jobs finished and frames lip-synced so far, told to the progress callback."""

    def __init__(self, progress: Optional[Progress], total: int, done: int) -> None:
        self._progress, self._total, self._done = progress, total, done
        self._frames: Dict[int, Tuple[int, int]] = {}  # row → (done, total) of its current attempt
        self._lock = threading.Lock()
        self._tell(STAGE_JOBS, done, total)

    def job_done(self, row: int) -> None:
        with self._lock:
            self._done += 1
            self._tell(STAGE_JOBS, self._done, self._total)

    def event(self, event: tuple) -> None:
        """A local worker's event: (frames, row, done, total) moves the frame count."""
        if event[0] != "frames":
            return
        with self._lock:
            self._frames[event[1]] = (event[2], event[3])
            done = sum(d for d, _ in self._frames.values())
            self._tell(STAGE_FRAMES, done, sum(t for _, t in self._frames.values()))

    def _tell(self, stage: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(stage, done, total)
