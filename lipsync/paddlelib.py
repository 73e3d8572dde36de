"""Paddle Inference without the rest of paddle: on a CPU-only paddle build, a run's predictors need only paddle's
native library, which loads in ~0.4 s, where `import paddle` also imports paddle's Python (training, distributed,
dygraph): 1.2-2.3 s on a 2-core machine, all of it before a fresh process's first generated frames.

    version()             paddle's version, read from its version file until paddle is imported
    compiled_with_cuda()  whether this paddle build has CUDA (the same file)
    library()             paddle's native library: AnalysisConfig, create_predictor (the classes paddle.inference
                          hands out), loaded alone on a CPU-only build unless paddle is already imported
    copy_in(handle, a)    a predictor input's copy_from_cpu (paddle's Python adds it; without it, its binding)

A later `import paddle` (an export, the precision gate's dygraph, --doctor) loads the library under the same name
from the same file, which Python answers from its cache of loaded extensions: the same classes and kernels in a
module object of paddle's own (which paddle's Python reaches as an attribute, paddle.base.libpaddle), the native
code initialised once. A GPU build always gets the whole of paddle: its CUDA libraries and the GPU probe are
paddle's own. paddle's FLAGS_* environment variables are read by paddle's Python when it is imported: to run with
one set, import paddle before the run (library() then takes the library paddle loaded).
"""

from __future__ import annotations

import _imp
import functools
import importlib
import importlib.machinery
import importlib.util
import logging
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, Optional

import numpy as np

log = logging.getLogger(__name__)

PACKAGE = "paddle"
LIBRARY = "paddle.base.libpaddle"  # the native library's module name in paddle 2.6 and 3.x
LIBRARY_FOLDER = ("base",)  # under paddle's package folder
VERSION_FILE = ("version", "__init__.py")  # written by paddle's setup.py: full_version = '2.6.2', cuda_version = ...
VERSION_FIELD = re.compile(r"^(\w+)\s*=\s*'([^']*)'", re.MULTILINE)
NO_CUDA = "False"  # cuda_version in a CPU-only build's version file

_alone: Optional[ModuleType] = None  # the library as loaded alone (left out of sys.modules: see the module doc)


def library() -> ModuleType:
    """paddle's native library: alone on a CPU-only build (see the module doc), else through `import paddle`."""
    loaded = sys.modules.get(LIBRARY) or _alone
    if loaded is not None:
        return loaded
    if compiled_with_cuda() or not _load_alone():
        importlib.import_module("paddle.base.core")  # the whole of paddle (a GPU build, or the library alone failed)
    return sys.modules.get(LIBRARY) or _alone  # type: ignore[return-value]


def version() -> str:
    """paddle.__version__, without importing paddle while it is not imported."""
    imported = getattr(sys.modules.get(PACKAGE), "__version__", None)
    return imported or _version_fields().get("full_version") or _imported_version()


def compiled_with_cuda() -> bool:
    """Whether this paddle build has CUDA (paddle.is_compiled_with_cuda()), from its version file when it names it."""
    cuda = _version_fields().get("cuda_version")
    if cuda is not None:
        return cuda != NO_CUDA
    return bool(importlib.import_module(PACKAGE).is_compiled_with_cuda())


def copy_in(handle: object, array: np.ndarray) -> None:
    """Copy a C-contiguous array into a predictor's input handle."""
    copy = getattr(handle, "copy_from_cpu", None) or handle._copy_from_cpu_bind  # type: ignore[attr-defined]
    copy(array)


def loaded_alone() -> bool:
    """Whether the native library was loaded alone and the rest of paddle is not imported."""
    return _alone is not None and PACKAGE not in sys.modules


def _load_alone() -> bool:
    """Load the native library under its own name without paddle's Python; False when that cannot be done.

    Python's import lock is held throughout: a thread importing paddle meanwhile waits, then finds the library in
    Python's cache of extensions, rather than initialising it a second time (its types register once per process)."""
    global _alone
    _imp.acquire_lock()
    try:
        if _alone is not None or LIBRARY in sys.modules:
            return True
        if PACKAGE in sys.modules:  # paddle being imported on another thread: its import loads the library
            return False
        path = _library_path()
        if path is None:
            return False
        loader = importlib.machinery.ExtensionFileLoader(LIBRARY, str(path))
        spec = importlib.util.spec_from_file_location(LIBRARY, str(path), loader=loader)
        try:
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            loader.exec_module(module)
        except Exception as exc:  # an unusual build: the whole of paddle loads it its own way
            log.info("paddle's native library did not load alone (%s); importing paddle", exc)
            return False
        finally:
            sys.modules.pop(LIBRARY, None)  # loading put it there: paddle's import makes its own module object
        _alone = module
        return True
    finally:
        _imp.release_lock()


def _library_path() -> Optional[Path]:
    """The native library's file in paddle's package folder (None: no such file, paddle installed another way)."""
    folder = _package_folder()
    if folder is None:
        return None
    stem = folder.joinpath(*LIBRARY_FOLDER) / LIBRARY.rsplit(".", 1)[1]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if stem.with_name(stem.name + suffix).is_file():
            return stem.with_name(stem.name + suffix)
    return None


@functools.lru_cache(maxsize=1)
def _version_fields() -> Dict[str, str]:
    """The fields of paddle's generated version file ({} when it cannot be read)."""
    folder = _package_folder()
    try:
        text = folder.joinpath(*VERSION_FILE).read_text() if folder is not None else ""
    except OSError:
        return {}
    return dict(VERSION_FIELD.findall(text))


def _package_folder() -> Optional[Path]:
    """paddle's package folder, found without importing it (None: paddle is not installed as a folder)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _imported_version() -> str:
    return str(importlib.import_module(PACKAGE).__version__)
