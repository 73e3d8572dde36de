"""A worker's own temp folder (lipsync.batch.scratch): where tempfile and child processes put their files, removed
at a normal exit, and, once its process is killed, by the next reclaim; a living worker's folder never is."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import ROOT

from lipsync.batch import scratch

# A worker: claims a folder under argv[1], leaves a file in a temp folder of its own as a job does, tells where
# (its root, the temp dir tempfile and a child process see, that folder), then waits for stdin to close or exits.
WORKER = """
import os, subprocess, sys, tempfile
from pathlib import Path
from lipsync.batch import scratch
root = scratch.claim(Path(sys.argv[1]))
job = Path(tempfile.mkdtemp(prefix="lipsync-"))
(job / "canvas.bgr").write_bytes(bytes(1000))
child = subprocess.run(["sh", "-c", "echo $TMPDIR"], capture_output=True, text=True).stdout.strip()
print(root, tempfile.gettempdir(), child, job, flush=True)
if sys.argv[2] == "wait":
    sys.stdin.read()
"""


def _start(base: Path, mode: str) -> tuple:
    process = subprocess.Popen([sys.executable, "-c", WORKER, str(base), mode], cwd=ROOT, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    root, temp, child, job = (Path(part) for part in process.stdout.readline().split())
    return process, root, temp, child, job


def test_a_workers_temp_files_go_in_its_folder_which_a_normal_exit_removes(tmp_path):
    process, root, temp, child, job = _start(tmp_path, "exit")
    assert process.wait(timeout=60) == 0
    assert root.parent == tmp_path and root.name.startswith(scratch.PREFIX)
    assert temp == root and child == root, "tempfile and child processes use the worker's folder"
    assert job.parent == root
    assert not root.exists() and not list(tmp_path.iterdir()), "removed at exit, with what the job left in it"


def test_a_killed_workers_folder_is_reclaimed_and_a_living_ones_is_not(tmp_path):
    killed, dead_root, *_ = _start(tmp_path, "wait")
    living, live_root, *_ = _start(tmp_path, "wait")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=60)
        assert (dead_root / scratch.LOCK_NAME).exists(), "a killed process cannot remove its folder"
        assert scratch.reclaim(tmp_path) == [dead_root]
        assert not dead_root.exists()
        assert live_root.exists() and list(live_root.rglob("canvas.bgr")), "a living worker's files stay"
    finally:
        living.stdin.close()
        living.wait(timeout=60)
    assert not live_root.exists()


def test_claiming_reclaims_dead_workers_folders_and_leaves_other_folders(tmp_path, monkeypatch):
    killed, dead_root, *_ = _start(tmp_path, "wait")
    killed.kill()
    killed.wait(timeout=60)
    staging = tmp_path / f"{scratch.STAGING_PREFIX}x"  # a worker between creating its folder and locking it
    unlocked = tmp_path / f"{scratch.PREFIX}nolock"  # not a claimed folder: no lock file to prove its owner gone
    other = tmp_path / "lipsync-abc"
    for folder in (staging, unlocked, other):
        folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)  # claim() changes it: restored after the test
    monkeypatch.setenv(scratch.TEMP_ENV, str(tmp_path))
    root = scratch.claim(tmp_path)
    try:
        assert scratch.claim(tmp_path) == root, "one folder per process"
        assert tempfile.gettempdir() == str(root)
        assert not dead_root.exists()
        assert {path.name for path in tmp_path.iterdir()} == {staging.name, unlocked.name, other.name, root.name}
        assert scratch.reclaim(tmp_path) == [], "its own folder is not a dead worker's"
    finally:
        scratch.release()
    assert not root.exists() and tempfile.gettempdir() != str(root)


def test_without_file_locks_a_folder_is_never_reclaimed_but_still_removed_at_release(tmp_path, monkeypatch):
    """Where flock(2) is missing (Windows) a folder's owner cannot be told dead: reclaim must never guess."""
    monkeypatch.setattr(scratch, "fcntl", None)
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)
    monkeypatch.setenv(scratch.TEMP_ENV, str(tmp_path))
    root = scratch.claim(tmp_path)
    try:
        stranger = tmp_path / f"{scratch.PREFIX}other"
        stranger.mkdir()
        (stranger / scratch.LOCK_NAME).touch()  # an unlocked claim: dead on Linux, unknowable here
        assert scratch.reclaim(tmp_path) == [] and stranger.exists() and root.exists()
    finally:
        scratch.release()
    assert not root.exists()
