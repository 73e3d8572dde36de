"""CUDA bootstrap: lets paddlepaddle-gpu find the CUDA/cuDNN libraries that pip's nvidia-* wheels installed.

paddlepaddle-gpu 2.6 dlopens `libcudnn.so`, `libcublas.so`, … by their unversioned names, while the
nvidia-*-cu11 wheels ship only `libcudnn.so.8`, `libcublas.so.11`, …, and glibc reads
LD_LIBRARY_PATH once, when a process starts. So `bootstrap()` links every wheel library, under its
own and its unversioned name, into one private folder in the user's cache and, when that folder is
not on LD_LIBRARY_PATH yet, re-executes the process once with it there. Call it first thing in an
entry point, before anything imports paddle:

    from lipsync import cuda
    cuda.bootstrap()
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

log = logging.getLogger(__name__)

WHEEL_LIBRARIES = "nvidia/*/lib/lib*.so*"  # where nvidia-*-cu11 wheels put their libraries, under site-packages
LIBRARY_PATH_ENV = "LD_LIBRARY_PATH"
REEXEC_ENV = "LIPSYNC_CUDA_REEXEC"  # set in the re-executed process, so it never re-executes again
DISABLE_ENV = "LIPSYNC_NO_CUDA_BOOTSTRAP"  # "1": leave the process alone (e.g. to use a system CUDA)
LINKS_DIRNAME = "cuda-libs"  # under lipsync's cache directory
DIGEST_CHARS = 12
# Loaded by name by paddlepaddle-gpu 2.6.2 (its phi/backends/dynload) to run convolutional networks.
REQUIRED = ("libcudnn.so", "libcublas.so", "libcublasLt.so")
# Also dlopened by that wheel or by cuDNN, but only for some kernels (runtime compilation) or not at all here.
OPTIONAL = ("libcudart.so", "libnvrtc.so", "libcuda.so")
DRIVER_NAME = "libcuda.so"  # the driver comes with the machine, not from pip; paddle asks for this name too
DRIVER_SONAME = "libcuda.so.1"
LDCONFIG = ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig")
LDCONFIG_TIMEOUT_S = 10
# The oldest Python lipsync runs on: _reexec needs sys.orig_argv (3.10), and so does gradio 6 for the app.
# paddlepaddle-gpu 2.6.2 has wheels for 3.8-3.12; the project targets 3.11.
MIN_PYTHON = (3, 10)
SYSTEM_CUDA_DIR = Path("/usr/local/cuda/lib64")  # paddle's own fallback folder
# CUDA's own libcu*/libnv*/libnccl* files (any version suffix) and nothing else: the runtime wheel also ships
# libOpenCL.so.1, which would shadow the system's copy in every child process (ffmpeg links OpenCL).
LIBRARY_NAME = re.compile(r"^(lib(?:cu|nv|nccl)[\w.+-]*?\.so)((?:\.\d+)*)$")


@dataclass(frozen=True)
class Library:
    """Where the dynamic loader would find one library this process may need, and whether it loads."""

    name: str
    path: Optional[Path]  # None: not found
    error: Optional[str] = None  # why loading it failed, when it was found


def bootstrap() -> Optional[Path]:
    """Before paddle loads: make pip's CUDA libraries loadable, re-executing this process once if needed.

    Returns the link folder (None when there are no nvidia-* wheels, e.g. on a CPU set-up).
    """
    if os.environ.get(DISABLE_ENV) == "1":
        return None
    folder = prepare()
    if folder is None or on_library_path(folder):
        return folder
    if os.environ.get(REEXEC_ENV):
        log.warning("%s is still not on %s after a restart; CUDA libraries may not load", folder, LIBRARY_PATH_ENV)
    elif "paddle" in sys.modules:
        log.warning("paddle was imported before lipsync.cuda.bootstrap(); the GPU may not find cuDNN/cuBLAS")
    elif sys.argv[0] in ("", "-"):
        log.warning("an interactive or stdin session cannot restart itself; set %s=%s first", LIBRARY_PATH_ENV, folder)
    elif sys.executable:
        _reexec(folder)
    return folder


def prepare(roots: Optional[Sequence[Path]] = None) -> Optional[Path]:
    """Build (or refresh) the link folder for the wheel libraries under `roots` (default: sys.path)."""
    found = find_libraries(site_roots() if roots is None else roots)
    if not found:
        return None
    wanted = link_names(found, driver_library())
    try:
        return sync_links(links_dir(wanted), wanted)
    except OSError as exc:
        log.warning("cannot create the CUDA library links (%s); the GPU may not be usable", exc)
        return None


def site_roots() -> List[Path]:
    """The folders on sys.path, where pip puts the nvidia package (site-packages, --target folders)."""
    return [Path(entry) for entry in sys.path if entry and Path(entry).is_dir()]


def find_libraries(roots: Iterable[Path]) -> Dict[str, Path]:
    """Each wheel library file by name; when two roots hold the same name, the first root wins."""
    found: Dict[str, Path] = {}
    for root in roots:
        for path in sorted(Path(root).glob(WHEEL_LIBRARIES)):
            if path.is_file() and LIBRARY_NAME.match(path.name) and path.name not in found:
                found[path.name] = path.absolute()
    return found


def link_names(found: Mapping[str, Path], driver: Optional[Path] = None) -> Dict[str, Path]:
    """Every library under its own name and its unversioned name (`libcudnn.so` -> `…/libcudnn.so.8`)."""
    wanted = dict(found)
    for name in sorted(found):
        plain = LIBRARY_NAME.match(name).group(1)  # type: ignore[union-attr]
        wanted.setdefault(plain, found[name])
    if driver is not None:
        wanted.setdefault(DRIVER_NAME, driver)
    return wanted


def links_dir(wanted: Mapping[str, Path]) -> Path:
    """A folder per set of libraries, so two environments never share (and fight over) links."""
    from .weights import cache_dir

    listing = "\n".join(f"{name}={wanted[name]}" for name in sorted(wanted))
    return cache_dir() / LINKS_DIRNAME / hashlib.sha256(listing.encode()).hexdigest()[:DIGEST_CHARS]


def sync_links(folder: Path, wanted: Mapping[str, Path]) -> Path:
    """Make `folder` hold exactly the symlinks in `wanted`; links already right are left alone."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in wanted.items():
        link = folder / name
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        staging = folder / f".{name}.{os.getpid()}"
        staging.unlink(missing_ok=True)
        os.symlink(target, staging)
        os.replace(staging, link)  # atomic: a concurrent process sees the old link or the new one
    for stale in folder.iterdir():
        if stale.is_symlink() and stale.name not in wanted and not stale.name.startswith("."):  # "." = staging
            stale.unlink(missing_ok=True)
    return folder


def on_library_path(folder: Path, environ: Optional[Mapping[str, str]] = None) -> bool:
    entries = (environ if environ is not None else os.environ).get(LIBRARY_PATH_ENV, "").split(os.pathsep)
    return str(folder) in entries


def with_library_path(folder: Path, environ: Mapping[str, str]) -> Dict[str, str]:
    """A copy of `environ` with `folder` first on LD_LIBRARY_PATH and the re-exec guard set."""
    env = dict(environ)
    rest = [entry for entry in env.get(LIBRARY_PATH_ENV, "").split(os.pathsep) if entry and entry != str(folder)]
    env[LIBRARY_PATH_ENV] = os.pathsep.join([str(folder), *rest])
    env[REEXEC_ENV] = "1"
    return env


def _reexec(folder: Path) -> None:
    """Replace this process by the same command line, now with the link folder on LD_LIBRARY_PATH."""
    argv = [sys.executable, *sys.orig_argv[1:]]  # interpreter options and `-m module` included (Python 3.10+)
    log.debug("re-executing with %s on %s: %s", folder, LIBRARY_PATH_ENV, argv)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execve(sys.executable, argv, with_library_path(folder, os.environ))


def driver_library() -> Optional[Path]:
    """The machine's libcuda.so.1 when no `libcuda.so` is registered (paddle dlopens the unversioned name)."""
    cache = ldconfig_cache()
    if DRIVER_NAME in cache or DRIVER_SONAME not in cache:
        return None
    return cache[DRIVER_SONAME]


def ldconfig_cache() -> Dict[str, Path]:
    """The system's library cache (`ldconfig -p`) as name -> path, 64-bit entries first; empty if unreadable."""
    tool = next((found for name in LDCONFIG if (found := shutil.which(name))), None)
    if tool is None:
        return {}
    try:
        out = subprocess.run([tool, "-p"], capture_output=True, text=True, timeout=LDCONFIG_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    cache: Dict[str, Path] = {}
    for line in sorted(out.splitlines()[1:], key=lambda text: "x86-64" not in text):
        name, _, path = line.strip().partition(" => ")
        cache.setdefault(name.split(" (", 1)[0], Path(path))
    return cache


def locate(name: str) -> Optional[Path]:
    """Where the dynamic loader finds `name`: LD_LIBRARY_PATH, then the system cache, then /usr/local/cuda."""
    for entry in os.environ.get(LIBRARY_PATH_ENV, "").split(os.pathsep):
        if entry and (Path(entry) / name).exists():
            return Path(entry) / name
    system = ldconfig_cache().get(name)
    if system is not None:
        return system
    fallback = SYSTEM_CUDA_DIR / name
    return fallback if fallback.exists() else None


def check_library(name: str) -> Library:
    """Find `name` and try to load it in this process (loading needs no GPU)."""
    path = locate(name)
    if path is None:
        return Library(name, None)
    try:
        ctypes.CDLL(str(path))
    except OSError as exc:
        return Library(name, path, str(exc))
    return Library(name, path)


def missing_libraries(names: Sequence[str] = REQUIRED) -> List[str]:
    """The names among `names` the dynamic loader cannot load, in order."""
    missing = []
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing
