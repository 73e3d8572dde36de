"""A worker process's own temp folder: every temp file of its jobs (the pipeline's, the speech it synthesizes,
a Ray actor's inputs) goes in it, and the folder goes when the process does, even one that was killed.

A job removes its own temp folders as it ends, also when it is stopped; a worker killed outright (the kernel's
out-of-memory killer, SIGKILL) cannot, and each such kill used to leave a job's folder (its still's canvas,
its frames written ahead) in /tmp for good. Now a worker claims a folder and holds an flock(2) on a file in it
for as long as it lives; Linux releases the lock when the process ends, however it ends, so an unlocked claimed
folder is a dead worker's. `reclaim` removes those: each worker runs it as it starts, the local driver when its
pool ends and Ray's after a batch (the folders of the workers killed during it). A worker that is stopped
(Ctrl-C) removes its own before it exits.

    root = scratch.claim()        # in a worker, before its first job: tempfile and child processes use `root`
    scratch.release()             # the worker ends its work normally (also run at interpreter exit)
    scratch.reclaim()             # anywhere: remove dead workers' folders under the temp dir
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional

try:
    import fcntl
except ImportError:  # Windows: folders are removed at a normal exit only, never reclaimed
    fcntl = None  # type: ignore[assignment]

PREFIX = "lipsync-worker-"  # claimed folders; reclaim looks only at these
STAGING_PREFIX = ".lipsync-worker-claiming-"  # a folder not locked yet: never reclaimed
LOCK_NAME = ".owner.lock"  # the file a living worker holds its flock on
TEMP_ENV = "TMPDIR"  # tempfile's and child processes' (ffmpeg, espeak-ng) temp dir

_held: dict = {}  # this process's claim: "root" (Path) and "lock" (open file), at most one


def claim(base: Optional[Path] = None) -> Path:
    """This process's temp folder under `base` (default: the temp dir), made the temp dir of tempfile and of the
    processes it starts; dead workers' folders there are removed first. Idempotent: a second call returns it."""
    if "root" in _held:
        return _held["root"]
    base = Path(base or tempfile.gettempdir())
    reclaim(base)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=base))
    lock = open(staging / LOCK_NAME, "w")  # not inherited by child processes (PEP 446)
    _lock(lock)
    root = staging.with_name(PREFIX + staging.name[len(STAGING_PREFIX):])
    staging.rename(root)  # the lock stays on the file, which moved with its folder
    _held.update(root=root, lock=lock)
    tempfile.tempdir = str(root)
    os.environ[TEMP_ENV] = str(root)
    return root


def release() -> None:
    """Remove this process's folder (and whatever its jobs left in it) and drop the claim."""
    root, lock = _held.pop("root", None), _held.pop("lock", None)
    if root is None:
        return
    shutil.rmtree(root, ignore_errors=True)
    lock.close()
    if tempfile.tempdir == str(root):
        tempfile.tempdir = None
    if os.environ.get(TEMP_ENV) == str(root):
        del os.environ[TEMP_ENV]


atexit.register(release)  # a no-op unless this process claimed a folder


def reclaim(base: Optional[Path] = None) -> List[Path]:
    """Remove the claimed folders under `base` (default: the temp dir) whose worker is gone; the removed ones."""
    base = Path(base or tempfile.gettempdir())
    try:
        folders = [path for path in base.iterdir() if path.name.startswith(PREFIX)]
    except OSError:
        return []
    return [folder for folder in folders if folder != _held.get("root") and _remove_if_dead(folder)]


def _lock(lock) -> None:
    """Hold the claim's lock; where the file system has no locks the folder is only removed at a normal exit
    (reclaim cannot lock an unlockable file, so it never removes one)."""
    try:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass


def _remove_if_dead(folder: Path) -> bool:
    """Remove `folder` when no process holds its lock (taking the lock meanwhile, so no one else removes it)."""
    if fcntl is None:
        return False
    try:
        lock = open(folder / LOCK_NAME, "r")
    except OSError:
        return False  # removed by another reclaimer, or not a claimed folder after all
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # its worker lives (or this file system has no locks: never guess)
        shutil.rmtree(folder, ignore_errors=True)
    return True
