"""Jobs on a Ray cluster: one actor per GPU (or per slot of CPUs), each loading the networks once. Input files
travel to the actors and the videos back as bytes through Ray's object store, so the cluster needs no shared
disk. An actor whose process dies is restarted by Ray, and the driver gives the job it held to the next free
actor (counted in `attempts`); the temp files the dead one left are removed when the batch ends on the driver's
node, and as an actor next starts on another (scratch). Ray is optional: requirements-ray.txt."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

from ..errors import LipSyncError
from . import scratch
from .manifest import Job
from .work import Outcome, dub, set_up_worker

CPU_SLOT = 4  # CPUs per actor on a cluster without GPUs, unless --workers says how many actors
MAX_ATTEMPTS = 3  # starts of one job before it is given up (each on a restarted or another actor)
FORWARDED_ENV = ("LIPSYNC_MODELS", "LIPSYNC_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT")  # weights look-up
CLOSE_TIMEOUT_S = 30  # for the actors to remove their temp folders at the end, before they are killed
LOCAL_ADDRESS = "local"  # start a Ray instance on this machine instead of joining a cluster
INSTALL_HINT = "Ray is not installed: pip install -r requirements-ray.txt (or pip install 'lipsync-paddle[ray]')"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # lipsync/: shipped to the actors, so they run this same code

OnOutcome = Callable[[Job, Outcome, int], None]


def _ray():
    try:
        import ray
    except ImportError:
        raise LipSyncError(INSTALL_HINT) from None
    return ray


class Dubber:
    """A Ray actor: one engine, many jobs; inputs arrive as bytes, the video leaves as bytes."""

    def __init__(self, threads: int) -> None:
        from ..engine import Engine  # (this package's import loaded lipsync's __init__ first, before paddle)

        set_up_worker(threads, None)  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU itself
        self._engine = Engine()

    def dub(self, job: Job, face: bytes, speech: Optional[bytes]) -> Tuple[Outcome, Optional[bytes]]:
        with tempfile.TemporaryDirectory(prefix="lipsync-ray-") as tmp:
            folder = Path(tmp)
            audio = _unpack(folder / "speech", job.audio.name, speech) if job.audio else None
            local = replace(job, face=_unpack(folder / "face", job.face.name, face), audio=audio,
                            outfile=folder / f"out{job.outfile.suffix}")  # its container, as the row named it
            outcome = dub(local, local.outfile, self._engine)  # type: ignore[arg-type]
            video = local.outfile.read_bytes() if outcome.ok else None  # type: ignore[union-attr]
        return outcome, video

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        """Remove this actor's temp folder: ray.kill, which ends it, runs no exit handlers."""
        scratch.release()


def _unpack(folder: Path, name: str, data: Optional[bytes]) -> Path:
    """Write an input's bytes under its own name (messages quote it) in a folder of its own."""
    folder.mkdir()
    path = folder / name
    path.write_bytes(data or b"")
    return path


def _read(path: Optional[Path]) -> Optional[bytes]:
    """An input's bytes (empty when unreadable: the job then fails with the pipeline's own message)."""
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError:
        return b""


def connect(address: str) -> bool:
    """Join the cluster at `address` ('auto', 'host:port', 'ray://…'; 'local' starts one here) unless this process
    already has; True when this call connected (and so should disconnect)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    ray.init(address=None if address == LOCAL_ADDRESS else address, runtime_env=runtime_env(), log_to_driver=False,
             include_dashboard=False)  # fmt: skip
    return True


def runtime_env() -> Dict[str, object]:
    """What a Ray job running lipsync needs: this lipsync package shipped to the workers (so they run the driver's
    code and need only its dependencies installed), and the weights look-up variables. Pass it to ray.init
    when connecting yourself."""
    return {"py_modules": [str(PACKAGE_DIR)], "env_vars": _forwarded_env()}


def _forwarded_env() -> Dict[str, str]:
    return {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}


def actor_shape(workers: Optional[int]) -> Tuple[int, Dict[str, float], int]:
    """(number of actors, Ray resources of each, CPU threads of each): one actor per GPU when the cluster has GPUs
    (asking for one CPU, which any GPU node has, and using its share of the cluster's), else slots of CPUs. Never
    more actors than the cluster has room for now: an actor waiting for resources would hold its jobs forever."""
    resources = _ray().cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if gpus:
        return min(workers or gpus, gpus), {"num_gpus": 1, "num_cpus": 1}, max(1, cpus // gpus)
    count = min(workers or max(1, cpus // CPU_SLOT), cpus)
    return count, {"num_cpus": cpus // count}, cpus // count


def run_ray(jobs: Sequence[Job], address: str, workers: Optional[int], on_outcome: OnOutcome) -> None:
    """Run the jobs on Ray actors; on_outcome(job, outcome, attempts) for each as it ends, writing its video."""
    ray = _ray()
    owned = connect(address)
    try:
        count, shape, threads = actor_shape(workers)
        actor = ray.remote(max_restarts=-1, max_task_retries=0)(Dubber)
        actors = [actor.options(runtime_env={"env_vars": _forwarded_env()}, **shape).remote(threads)
                  for _ in range(count)]  # fmt: skip
        try:
            _Driver(ray, actors, on_outcome).run(jobs)
            _close(ray, actors)  # every actor is idle now
        finally:
            for each in actors:
                ray.kill(each)
            scratch.reclaim()  # this node's actors killed mid-job (elsewhere: when an actor next starts there)
    finally:
        if owned:
            ray.shutdown()


def _close(ray, actors: List[object]) -> None:
    """Let each idle actor remove its temp folder before it is killed (a stuck one does not hold the batch up)."""
    ray.wait([each.close.remote() for each in actors], num_returns=len(actors), timeout=CLOSE_TIMEOUT_S)


class _Driver:
    """Gives each free actor the next job, collects videos, and resubmits a job whose actor died."""

    def __init__(self, ray, actors: List[object], on_outcome: OnOutcome) -> None:
        self._ray, self._idle, self._on_outcome = ray, list(actors), on_outcome
        self._attempts: Dict[int, int] = {}
        self._inflight: Dict[object, Tuple[object, Job]] = {}

    def run(self, jobs: Sequence[Job]) -> None:
        waiting: Deque[Job] = deque(jobs)
        while waiting or self._inflight:
            while waiting and self._idle:
                self._submit(self._idle.pop(), waiting.popleft())
            if not self._inflight:
                continue
            ready, _ = self._ray.wait(list(self._inflight), num_returns=1)
            actor, job = self._inflight.pop(ready[0])
            if self._finish(job, ready[0]):  # its actor died: Ray restarts it; a live actor takes the job first
                self._idle.insert(0, actor)
                waiting.appendleft(job)
            else:
                self._idle.append(actor)

    def _submit(self, actor, job: Job) -> None:
        missing = next((f"{what} file not found: {path}" for what, path in (("face", job.face), ("audio", job.audio))
                        if path is not None and not path.is_file()), None)  # fmt: skip
        if missing:  # inputs travel from this machine: one that is not here fails here
            self._idle.append(actor)
            self._on_outcome(job, Outcome(False, error=missing), 0)
            return
        self._attempts[job.row] = self._attempts.get(job.row, 0) + 1
        face, speech = self._ray.put(_read(job.face)), self._ray.put(_read(job.audio))
        self._inflight[actor.dub.remote(job, face, speech)] = (actor, job)

    def _finish(self, job: Job, ref) -> bool:
        """Report the job's outcome and write its video; True when it should run again (its actor died)."""
        attempts = self._attempts[job.row]
        try:
            outcome, video = self._ray.get(ref)
        except self._ray.exceptions.RayActorError as exc:
            if attempts < MAX_ATTEMPTS:
                return True
            reason = f"its Ray worker died during the job {attempts} times ({type(exc).__name__})"
            outcome, video = Outcome(False, error=reason), None
        except self._ray.exceptions.RayError as exc:
            outcome, video = Outcome(False, error=f"Ray could not run the job: {exc.__class__.__name__}"), None
        if video is not None:
            outcome = _save(job, outcome, video)
        self._on_outcome(job, outcome, attempts)
        return False


def _save(job: Job, outcome: Outcome, video: bytes) -> Outcome:
    """Write a returned video under the job's output name, atomically (hidden .part file, then rename)."""
    assert job.outfile is not None
    job.outfile.parent.mkdir(parents=True, exist_ok=True)
    partial = job.outfile.with_name(f".{job.outfile.name}.{secrets.token_hex(4)}.part")
    try:
        partial.write_bytes(video)
        os.replace(partial, job.outfile)
    except OSError as exc:
        return replace(outcome, ok=False, error=f"could not write {job.outfile} ({exc.strerror})")
    finally:
        partial.unlink(missing_ok=True)
    return outcome

