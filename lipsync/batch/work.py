"""One job inside a worker: speak its text if it has one, then the same pipeline as the CLI, on the worker's
engine (networks loaded once per worker). What the local and the Ray workers both run."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from .. import native, tts
from ..engine import Engine
from ..errors import LipSyncError, first_line
from ..types import Progress
from . import scratch
from .manifest import Job

ERROR_CHARS = 300  # of a failed job's one-line error in results.csv
THREADS_ENV = "LIPSYNC_THREADS"  # lipsync.cpu reads it: the threads each worker's networks and OpenCV use
GPU_ENV = "CUDA_VISIBLE_DEVICES"  # the one GPU a local worker sees (paddle's GPU 0)


@dataclass(frozen=True)
class Outcome:
    """What a worker reports for one job."""

    ok: bool
    seconds: float = 0.0
    frames: int = 0
    device: str = ""
    worker: str = ""
    error: str = ""
    notes: Tuple[str, ...] = ()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def set_up_worker(threads: int, gpu: Optional[str], temp_base: Optional[Path] = None) -> None:
    """Environment of a fresh worker process, before paddle loads: its threads and its GPU; its own temp folder
    under `temp_base` (default: the temp dir), gone with it even when it is killed (scratch); paddle's native
    chatter on stderr held back, as the CLI does (a worker runs one job at a time)."""
    scratch.claim(temp_base)
    native.hide_native_chatter(True)
    if threads > 0:
        os.environ[THREADS_ENV] = str(threads)
    if gpu is not None:
        os.environ[GPU_ENV] = gpu


def dub(job: Job, outfile: Path, engine: Engine, progress: Optional[Progress] = None) -> Outcome:
    """Run one job into `outfile`; a bad input gives a failed Outcome with a one-line reason, never an exception
    (except KeyboardInterrupt/SystemExit: the worker is being stopped)."""
    from ..pipeline import run

    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="lipsync-batch-") as tmp:
            speech = job.audio if job.audio is not None else _speak(job, Path(tmp))
            result = run(job.face, speech, outfile, job.options, progress=progress, engine=engine)
    except LipSyncError as exc:
        return _failed(started, first_line(exc, ERROR_CHARS))
    except Exception as exc:  # a bug or a library's failure on one input: the batch goes on
        return _failed(started, f"{type(exc).__name__}: {first_line(exc, ERROR_CHARS)}")
    return Outcome(True, time.perf_counter() - started, result.frames, result.device, worker_name(), notes=result.notes)


def _failed(started: float, error: str) -> Outcome:
    return Outcome(False, time.perf_counter() - started, worker=worker_name(), error=error)


def _speak(job: Job, folder: Path) -> Path:
    assert job.text is not None
    return tts.speak(job.text, folder, job.voice, job.rate).path
