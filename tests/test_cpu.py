"""CPU threads follow the quota and affinity the process really has (cgroup v2/v1, sched_getaffinity), or
$LIPSYNC_THREADS / --threads; never os.cpu_count()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from lipsync import cpu
from lipsync.errors import LipSyncError

MANY = 16  # CPUs a big host would report: what a thread count that ignored the quota or affinity would start


@pytest.fixture
def host(monkeypatch, tmp_path):
    """A fake cgroup mount, 8 CPUs in the affinity mask, no $LIPSYNC_THREADS, this process at the v2 root."""
    monkeypatch.delenv(cpu.THREADS_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/\n")
    monkeypatch.setattr(cpu, "PROC_CGROUP", proc)
    root = tmp_path / "cgroup"
    root.mkdir()
    return root


def test_cgroup_v2_quota_rounds_up_and_caps_the_affinity(host):
    (host / "cpu.max").write_text("150000 100000\n")
    assert cpu.cgroup_quota(host) == 1.5
    assert cpu.cpu_threads(host) == 2
    (host / "cpu.max").write_text("2000000 100000\n")  # 20 CPUs' worth: the 8 allowed CPUs are the limit
    assert cpu.cpu_threads(host) == 8


def test_cgroup_v2_max_means_no_quota(host):
    (host / "cpu.max").write_text("max 100000\n")
    assert cpu.cgroup_quota(host) is None
    assert cpu.cpu_threads(host) == 8, "the affinity mask, not os.cpu_count()"


def test_cgroup_v2_of_this_process_under_a_host_mount(host):
    """On a host (no cgroup namespace) the process's own folder under the mount holds its cpu.max."""
    cpu.PROC_CGROUP.write_text("0::/system.slice/space.service\n")
    own = host / "system.slice" / "space.service"
    own.mkdir(parents=True)
    (own / "cpu.max").write_text("50000 100000\n")
    (host / "cpu.max").write_text("max 100000\n")
    assert cpu.cgroup_quota(host) == 0.5 and cpu.cpu_threads(host) == 1


@pytest.mark.parametrize("folder", cpu.CGROUP_V1_DIRS)
def test_cgroup_v1_cfs_quota(host, folder):
    v1 = host / folder
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu.cgroup_quota(host) == 3.0 and cpu.cpu_threads(host) == 3
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu.cgroup_quota(host) is None and cpu.cpu_threads(host) == 8


def test_no_cgroup_files_and_a_tiny_quota(host):
    assert cpu.cgroup_quota(host) is None and cpu.cpu_threads(host) == 8
    (host / "cpu.max").write_text("1000 100000\n")  # a hundredth of a CPU: still one thread
    assert cpu.cpu_threads(host) == 1


def test_lipsync_threads_overrides_and_is_checked(host, monkeypatch):
    (host / "cpu.max").write_text("100000 100000\n")
    monkeypatch.setenv(cpu.THREADS_ENV, "6")
    assert cpu.cpu_threads(host) == 6
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv(cpu.THREADS_ENV, bad)
        with pytest.raises(LipSyncError, match=f"{cpu.THREADS_ENV} must be a positive whole number.*{bad!r}"):
            cpu.cpu_threads(host)


def test_engine_threads_come_from_the_option_first(monkeypatch):
    from lipsync.engine import cpu_threads
    from lipsync.options import LipSyncOptions

    monkeypatch.setenv(cpu.THREADS_ENV, "5")
    assert cpu_threads(LipSyncOptions(threads=3)) == 3
    assert cpu_threads(LipSyncOptions()) == 5
    with pytest.raises(LipSyncError, match="threads"):
        LipSyncOptions(threads=-1)


JOB = """
import json, os, sys
os.sched_setaffinity(0, {0})
os.cpu_count = lambda: %d  # a big host: a thread count taken from here would show
import lipsync
from lipsync import cpu
result = lipsync.run(sys.argv[1], sys.argv[2], sys.argv[3], lipsync.LipSyncOptions(face_detector="haar", device="cpu"))
print(json.dumps({"threads": cpu.cpu_threads(), "tasks": len(os.listdir("/proc/self/task")), "frames": result.frames}))
""" % MANY


def _job_threads(media, out: Path, threads_env: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k != cpu.THREADS_ENV}
    env.update(PYTHONPATH=str(ROOT), **({cpu.THREADS_ENV: threads_env} if threads_env else {}))
    done = subprocess.run([sys.executable, "-c", JOB, str(media["photo"]), str(media["speech"]), str(out)],
                          capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity")
def test_a_job_on_one_allowed_cpu_starts_few_threads(media, tmp_path):
    """Affinity restricted to one CPU: the run uses one thread for paddle and OpenCV, and its process holds far
    fewer threads than the same job given the thread count of a big host (what os.cpu_count() would start)."""
    one = _job_threads(media, tmp_path / "one.mp4")
    many = _job_threads(media, tmp_path / "many.mp4", threads_env=str(MANY))
    assert one["threads"] == 1 and many["threads"] == MANY and one["frames"] == many["frames"] > 0
    assert one["tasks"] + MANY // 2 <= many["tasks"], (one, many)
