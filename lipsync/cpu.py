"""The CPU this process may really use: feature flags, and a thread count that follows its quota and affinity."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import List, Optional

from .errors import LipSyncError

THREADS_ENV = "LIPSYNC_THREADS"  # a fixed thread count for the networks and OpenCV, overriding the automatic one
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")  # "0::/path" names this process's cgroup v2 under the mount
CGROUP_V2_MAX = "cpu.max"  # "<quota> <period>" in µs, or "max <period>": no limit
CGROUP_V1_DIRS = ("cpu,cpuacct", "cpu")  # where cgroup v1 mounts the cpu controller
CGROUP_V1_QUOTA = "cpu.cfs_quota_us"  # -1: no limit
CGROUP_V1_PERIOD = "cpu.cfs_period_us"
NO_LIMIT = "max"
CPUINFO = Path("/proc/cpuinfo")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # CPUs where oneDNN runs bf16 convolutions natively
MIN_THREADS = 1


def cpu_flags() -> frozenset:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    return frozenset(_cpuinfo_field("flags").split())


def cpu_model() -> str:
    """The CPU's model name as Linux reports it ("" elsewhere)."""
    return _cpuinfo_field("model name")


def cpu_features() -> str:
    """What picks the CPU paths, for --doctor and the benchmark: the model and the features that matter."""
    flags = cpu_flags()
    wanted = ("avx2", "avx512f", *CPU_BF16_FLAGS, "amx_tile", "amx_int8")
    present = [flag for flag in wanted if flag in flags]
    return f"{cpu_model() or 'unknown CPU'}; {' '.join(present) or 'no AVX2'}"


def _cpuinfo_field(name: str) -> str:
    """The first value of a /proc/cpuinfo field ("" when absent or unreadable)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def bf16_capable(flags: Optional[frozenset] = None) -> bool:
    """Whether this CPU runs bf16 convolutions natively (AMX or AVX-512 BF16)."""
    return bool(set(CPU_BF16_FLAGS) & (cpu_flags() if flags is None else flags))


def cpu_threads(root: Path = CGROUP_ROOT) -> int:
    """Threads for the networks and OpenCV: $LIPSYNC_THREADS when set, else the CPUs this process may run on
    (its affinity), fewer when its cgroup's CPU quota is smaller (rounded up); at least one."""
    fixed = os.environ.get(THREADS_ENV, "").strip()
    if fixed:
        return _positive(fixed)
    allowed = affinity_count()
    quota = cgroup_quota(root)
    if quota is not None:
        allowed = min(allowed, math.ceil(quota))
    return max(MIN_THREADS, allowed)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < MIN_THREADS:
        raise LipSyncError(f"{THREADS_ENV} must be a positive whole number of threads (got {text!r}); "
                           "unset it to follow the CPU quota")  # fmt: skip
    return value


def affinity_count() -> int:
    """The CPUs the scheduler lets this process run on (os.cpu_count() where affinity is unknown)."""
    try:
        return len(os.sched_getaffinity(0)) or MIN_THREADS
    except (AttributeError, OSError):
        return os.cpu_count() or MIN_THREADS


def cgroup_quota(root: Path = CGROUP_ROOT) -> Optional[float]:
    """CPUs' worth of time the process's cgroup may use (quota / period), or None when unlimited or unknown.

    `root` is where the cgroup file system is mounted: cgroup v2's cpu.max there, else v1's cfs files."""
    v2 = next((text for text in (_read(folder / CGROUP_V2_MAX) for folder in _v2_folders(root)) if text), None)
    if v2 is not None:
        parts = v2.split()
        return _ratio(parts[0], parts[1]) if len(parts) == 2 and parts[0] != NO_LIMIT else None
    for folder in CGROUP_V1_DIRS:
        quota, period = _read(root / folder / CGROUP_V1_QUOTA), _read(root / folder / CGROUP_V1_PERIOD)
        if quota is not None and period is not None:
            return _ratio(quota, period)
    return None


def _v2_folders(root: Path) -> List[Path]:
    """This process's own cgroup folder (on a host; a container sees its own at the root), then the root."""
    own = next((line[3:] for line in (_read(PROC_CGROUP) or "").splitlines() if line.startswith("0::")), "/")
    return [root / own.lstrip("/"), root] if own.strip("/") else [root]


def _ratio(quota: str, period: str) -> Optional[float]:
    try:
        share = int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None
    return share if share > 0 else None  # v1 writes -1 for no limit


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def use_opencv_threads(threads: int) -> None:
    """OpenCV's resize and colour conversions run on at most `threads` threads (a process-wide setting)."""
    import cv2

    cv2.setNumThreads(threads)
