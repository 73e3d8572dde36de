"""Jobs on this machine: a pool of worker processes (spawned, so each starts clean), each loading the networks
once and running job after job. A worker that dies (killed, out of memory) breaks the pool: the jobs it held are
retried on a fresh one, and the temp files of its job are removed when the pool ends (scratch). On an interrupt
the workers stop their jobs cleanly (no partial file is left)."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import tempfile
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..types import STAGE_SYNC
from . import scratch
from .manifest import Job
from .work import Outcome, dub, set_up_worker

MAX_ATTEMPTS = 3  # starts of one job before it is given up: a dying worker takes its pool's other jobs along
EVENT_READY, EVENT_START, EVENT_FRAMES = "ready", "start", "frames"
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
STOPPED_EXIT = 3  # a worker's exit code after it stopped its job on a signal
EVENT_WAIT_S = 0.2
# How the driver (and Linux, when the driver dies) stops a worker: SIGINT, as Ctrl-C in a terminal does. A worker
# takes SIGTERM the same way: a pool one worker left (one that stopped between jobs, on Ctrl-C) terminates the others.
# Both handlers are set once paddle is imported: its import puts in its own SIGTERM handler, which aborts the
# process in the middle of a job and leaves its ffmpeg to finish a partial file.
STOP_SIGNAL = signal.SIGINT
STOP_SIGNALS = (STOP_SIGNAL, signal.SIGTERM)

Event = tuple  # (EVENT_READY, pid) | (EVENT_START, row, pid) | (EVENT_FRAMES, row, done, total)
OnEvent = Callable[[Event], None]
OnOutcome = Callable[[Job, Outcome, int], None]  # job, its outcome, attempts

# ---------------------------------------------------------------- inside a worker process

_worker: Dict[str, object] = {}  # this worker's engine and event queue; one of each per process
_busy = threading.Event()  # a job is running: a stop signal unwinds it (cleaning up) instead of exiting at once
_stopping = threading.Event()  # a stop signal came: later ones must not interrupt the clean-up


def _init_worker(events: "multiprocessing.Queue", gpus: "multiprocessing.Queue", threads: int,
                 temp_base: Path) -> None:  # fmt: skip
    """Once per worker process, before any job: environment (its temp folder under the driver's temp dir),
    signals, and an empty engine to fill and keep."""
    from ..engine import Engine  # (this package's import loaded lipsync's __init__ first, before paddle)

    gpu = None
    try:
        gpu = gpus.get_nowait()
    except queue.Empty:
        pass
    set_up_worker(threads, gpu, temp_base)
    _die_with_parent()
    import paddle  # noqa: F401  (now, not in the first job: its import replaces the SIGTERM handler set below)

    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_stop)
    _worker.update(engine=Engine(), events=events)
    events.put((EVENT_READY, os.getpid()))


def _die_with_parent() -> None:
    """Ask Linux to send the stop signal when the driver dies (killed): the job stops cleanly, not running on."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, STOP_SIGNAL)
    except (OSError, AttributeError):
        pass  # not Linux: the worker finishes its job, then exits when the pool's pipe closes


def _on_stop(signum, frame) -> None:
    if _stopping.is_set():
        return
    _stopping.set()
    if _busy.is_set():
        raise SystemExit(STOPPED_EXIT)  # unwinds the job: ffmpeg stopped, .part file and temp folder removed
    _exit_stopped()


def _work(job: Job) -> Outcome:
    events = _worker["events"]
    events.put((EVENT_START, job.row, os.getpid()))  # type: ignore[attr-defined]

    def progress(stage: str, done: int, total: int) -> None:
        if stage == STAGE_SYNC:
            events.put((EVENT_FRAMES, job.row, done, total))  # type: ignore[attr-defined]

    _busy.set()
    try:
        return dub(job, job.outfile, _worker["engine"], progress)  # type: ignore[arg-type]
    except (KeyboardInterrupt, SystemExit):
        _exit_stopped()  # the job was cleaned up by the unwinding; the pool is being stopped anyway
    finally:
        _busy.clear()


def _exit_stopped() -> None:
    """End a stopped worker at once (no exit handlers: they could wait on the pool's queues), its temp folder
    removed first: the driver may be gone before this process is."""
    scratch.release()
    os._exit(STOPPED_EXIT)


# ---------------------------------------------------------------- in the driver


@dataclass
class _State:
    """The driver's view of the workers: which job each started, how often each job started, their pids."""

    attempts: Dict[int, int] = field(default_factory=dict)
    running: Dict[int, int] = field(default_factory=dict)  # row → pid of the worker running it
    pids: set = field(default_factory=set)


def run_local(jobs: Sequence[Job], workers: int, threads: int, gpus: Sequence[str], on_outcome: OnOutcome,
              on_event: Optional[OnEvent] = None) -> None:  # fmt: skip
    """Run the jobs on `workers` processes (each with `threads` CPU threads and, if any, one of `gpus`);
    on_outcome(job, outcome, attempts) for each job as it ends, in the calling thread."""
    state = _State()
    pending = list(jobs)
    while pending:
        lost = _run_pool(pending, workers, threads, gpus, state, on_outcome, on_event)
        pending = []
        for job in lost:
            if state.attempts.get(job.row, 0) >= MAX_ATTEMPTS:
                tries = state.attempts[job.row]
                on_outcome(job, Outcome(False, error=f"its worker process died during the job {tries} times "
                                                     "(killed, or out of memory?)"), tries)  # fmt: skip
            else:
                pending.append(job)


def _run_pool(jobs: Sequence[Job], workers: int, threads: int, gpus: Sequence[str], state: _State,
              on_outcome: OnOutcome, on_event: Optional[OnEvent]) -> List[Job]:  # fmt: skip
    """One pool for these jobs; the jobs it could not finish because a worker died (empty when none did)."""
    context = multiprocessing.get_context("spawn")
    events, gpu_ids = context.Queue(), context.Queue()
    for index in range(workers if gpus else 0):
        gpu_ids.put(gpus[index % len(gpus)])  # more workers than GPUs share them
    listener = _Listener(events, state, on_event)
    temp_base = Path(tempfile.gettempdir())
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                               initargs=(events, gpu_ids, threads, temp_base))  # fmt: skip
    futures: Dict[Future, Job] = {pool.submit(_work, job): job for job in jobs}
    lost: List[Job] = []
    try:
        lost = _collect(futures, state, listener, on_outcome)
    except BaseException:
        _stop_workers(state.pids)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        scratch.reclaim(temp_base)  # the temp folders of workers killed during the pool (the others removed theirs)
        listener.stop()
        events.close()
        gpu_ids.close()
    return lost


def _collect(futures: Dict[Future, Job], state: _State, listener: "_Listener", on_outcome: OnOutcome) -> List[Job]:
    """Wait for the jobs; report each outcome; the jobs lost to a broken pool."""
    lost: List[Job] = []
    remaining = set(futures)
    while remaining:
        done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
        for future in done:
            job = futures[future]
            try:
                outcome = future.result()
            except BrokenProcessPool:
                lost.append(job)
                continue
            listener.flush()
            state.running.pop(job.row, None)
            on_outcome(job, outcome, max(state.attempts.get(job.row, 0), 1))
    listener.flush()
    state.running.clear()
    return sorted(lost, key=lambda job: job.row)


def _stop_workers(pids: set) -> None:
    """Signal each worker: a running job unwinds (ffmpeg stopped, partial file deleted), then the worker exits."""
    for pid in pids:
        try:
            os.kill(pid, STOP_SIGNAL)
        except ProcessLookupError:
            pass


class _Listener:
    """Reads the workers' events in a thread: keeps the state, and passes them on."""

    def __init__(self, events: "multiprocessing.Queue", state: _State, on_event: Optional[OnEvent]) -> None:
        self._events, self._state, self._on_event = events, state, on_event
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lipsync-batch-events", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._take(EVENT_WAIT_S)

    def _take(self, timeout: Optional[float]) -> bool:
        try:
            event = self._events.get(timeout=timeout) if timeout else self._events.get_nowait()
        except (queue.Empty, OSError, ValueError, EOFError):
            return False
        with self._lock:
            self._apply(event)
        return True

    def _apply(self, event: Event) -> None:
        if event[0] == EVENT_READY:
            self._state.pids.add(event[1])
        elif event[0] == EVENT_START:
            self._state.attempts[event[1]] = self._state.attempts.get(event[1], 0) + 1
            self._state.running[event[1]] = event[2]
        if self._on_event is not None:
            self._on_event(event)

    def flush(self) -> None:
        """Apply the events already sent (a job's start before its outcome is counted)."""
        while self._take(None):
            pass

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self.flush()
