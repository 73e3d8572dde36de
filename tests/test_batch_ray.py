"""Batch dubbing on a Ray cluster started by the test (2 CPUs, bound to 127.0.0.1): the six-row batch with inputs
and videos travelling through Ray, a rerun that skips what is done, and an actor killed mid-job."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from batch_helpers import CLOSED_PORT_PROXY, check_batch, make_media, read_csv, typed_speech_seconds, write_manifest

from lipsync import batch
from lipsync.batch import DONE, FAILED, SKIPPED
from lipsync.options import LipSyncOptions

ray = pytest.importorskip("ray")

CPU_HAAR = LipSyncOptions(device="cpu", face_detector="haar")
ACTOR_TITLE = b"ray::Dubber.dub"  # an actor's process title while it runs a job
KILL_DEADLINE_S = 120
POLL_S = 0.1


@pytest.fixture(scope="module")
def cluster(isolated_weights):
    """A two-CPU Ray instance on 127.0.0.1, running this lipsync (shipped by runtime_env), edge-tts offline."""
    from lipsync.batch.ray_backend import runtime_env

    saved = {name: os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy")}
    os.environ.update(HTTPS_PROXY=CLOSED_PORT_PROXY, https_proxy=CLOSED_PORT_PROXY)  # inherited by Ray's workers
    # Ray's sessions (logs, sockets) in a folder of the test's own, not /tmp/ray, where each run left one. A short
    # path beside pytest's: Ray's socket paths under it must stay within the 107 characters a unix socket allows.
    sessions = tempfile.mkdtemp(prefix="test-ray-", dir=_fresh_process_temp_dir())
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", runtime_env=runtime_env(),
             log_to_driver=False, configure_logging=False, _temp_dir=sessions)  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(sessions, ignore_errors=True)
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


@pytest.fixture(scope="module")
def small_media(tmp_path_factory, astronaut_bgr):
    folder = tmp_path_factory.mktemp("ray-media")
    media = make_media(folder, astronaut_bgr)
    return media, write_manifest(folder, media)


def test_a_batch_on_ray_actors_then_a_rerun(cluster, small_media, tmp_path):
    media, manifest = small_media
    outdir = tmp_path / "out"
    rows = batch.run(manifest, outdir, workers=2, ray_address="auto", options=CPU_HAAR)
    check_batch(rows, outdir, media, typed_speech_seconds(tmp_path))
    again = batch.run(manifest, outdir, workers=2, ray_address="auto", options=CPU_HAAR)
    assert [row.status for row in again] == [SKIPPED, SKIPPED, SKIPPED, FAILED, SKIPPED, SKIPPED, FAILED]
    assert read_csv(outdir / "results.csv")[3]["error"] == rows[3].error


def _actor_running_a_job() -> int:
    """The pid of an actor process that is running a job (its title says so), or 0."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(ACTOR_TITLE):
                    return int(entry.name)
            except OSError:
                continue
    return 0


def _kill_first_busy_actor(killed: list, stop: threading.Event) -> None:
    deadline = time.monotonic() + KILL_DEADLINE_S
    while not stop.is_set() and time.monotonic() < deadline:
        pid = _actor_running_a_job()
        if pid:
            time.sleep(1.0)  # well into the job: loading the networks and the first frames
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(POLL_S)


def _fresh_process_temp_dir() -> Path:
    """The temp dir a new process on this machine uses (this one's is pytest's: conftest.private_temp_dir)."""
    code = "import tempfile; print(tempfile.gettempdir())"
    return Path(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip())


def test_a_job_whose_actor_is_killed_is_done_by_another(cluster, small_media, tmp_path):
    media, _ = small_media
    jobs = [{"face": str(media["photo"]), "audio": str(media["speech"]), "outfile": "one.mp4"}]
    killed: list = []
    stop = threading.Event()
    temp = _fresh_process_temp_dir()  # the actors', on this one-machine cluster
    before = set(temp.glob("*lipsync*"))
    killer = threading.Thread(target=_kill_first_busy_actor, args=(killed, stop))
    killer.start()
    try:
        rows = batch.run(jobs, tmp_path / "out", workers=2, ray_address="auto", options=CPU_HAAR)
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1
    assert (rows[0].status, rows[0].attempts) == (DONE, 2), rows[0]
    assert not rows[0].worker.endswith(f":{killed[0]}") and "retried" in rows[0].notes
    assert read_csv(tmp_path / "out" / "results.csv")[0]["attempts"] == "2"
    left = sorted(path.name for path in set(temp.glob("*lipsync*")) - before)
    assert not left, "the killed actor's temp files and the actors' folders are removed when the batch ends"


@pytest.mark.parametrize("resources, workers, expected", [
    ({"GPU": 4.0, "CPU": 16.0}, None, (4, {"num_gpus": 1, "num_cpus": 1}, 4)),  # one actor per GPU
    ({"GPU": 4.0, "CPU": 16.0}, 8, (4, {"num_gpus": 1, "num_cpus": 1}, 4)),  # never more than the GPUs
    ({"CPU": 16.0}, None, (4, {"num_cpus": 4}, 4)),  # CPU slots of 4
    ({"CPU": 2.0}, None, (1, {"num_cpus": 2}, 2)),
    ({"CPU": 2.0}, 5, (2, {"num_cpus": 1}, 1)),  # never more than the CPUs
])  # fmt: skip
def test_actors_fit_the_cluster(monkeypatch, resources, workers, expected):
    from lipsync.batch import ray_backend

    class FakeRay:
        @staticmethod
        def cluster_resources():
            return resources

    monkeypatch.setattr(ray_backend, "_ray", lambda: FakeRay)
    assert ray_backend.actor_shape(workers) == expected
