"""Each request's own folder under the app's temp dir: kept while its job runs and for a while after it ended
(gradio copies the results out soon after), then removed by a later request's clean-up."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import FrozenSet, Iterator, Set

APP_TMP = Path(tempfile.gettempdir()) / "lipsync-app"  # under gettempdir(): gradio may serve files from here
REQUEST_PREFIX = "request-"
EXAMPLES_PREFIX = "examples-"  # + pid: cached example results, kept while that process runs
REQUEST_TTL_S = 3600  # a finished request's folder is removed this long after it ended


class RequestFolders:
    """The request folders under `root` (thread-safe). A folder is active from new() until its job ends;
    clean-ups remove the inactive ones untouched for ttl_s, and never an active one, however long it runs."""

    def __init__(self, root: Path = APP_TMP, ttl_s: float = REQUEST_TTL_S) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self._active: Set[Path] = set()
        self._lock = threading.Lock()

    def new(self) -> Path:
        """A fresh, active folder for one request; expired folders of earlier requests are removed first."""
        self.clean_up()
        self.root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=self.root))
        with self._lock:
            self._active.add(folder)
        return folder

    def finish(self, folder: Path, keep: bool) -> None:
        """The folder's job ended: keep its results for ttl_s from now, or remove it at once."""
        with self._lock:
            self._active.discard(folder)
            if keep and folder.is_dir():
                os.utime(folder)  # the time to live counts from the end of the job
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)

    @contextlib.contextmanager
    def job(self) -> Iterator[Path]:
        """A folder for the length of a job: kept when the job succeeds, removed when it fails."""
        folder = self.new()
        try:
            yield folder
        except BaseException:
            self.finish(folder, keep=False)
            raise
        self.finish(folder, keep=True)

    def active(self) -> FrozenSet[Path]:
        """The folders of the jobs running now."""
        with self._lock:
            return frozenset(self._active)

    def clean_up(self) -> None:
        """Remove the folders of requests that ended more than ttl_s ago (active ones stay)."""
        cutoff = time.time() - self.ttl_s
        with self._lock:
            expired = [old for old in self.root.glob(f"{REQUEST_PREFIX}*") if old not in self._active
                       and _modified(old) < cutoff]  # fmt: skip
        for old in expired:
            shutil.rmtree(old, ignore_errors=True)


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # another clean-up removed it first
        return float("inf")


requests = RequestFolders()  # the process's request folders


def examples_cache(root: Path = APP_TMP) -> Path:
    """This process's folder for cached example results; those of processes that have ended are removed."""
    for folder in root.glob(f"{EXAMPLES_PREFIX}*"):
        pid = folder.name.removeprefix(EXAMPLES_PREFIX)
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    return root / f"{EXAMPLES_PREFIX}{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
