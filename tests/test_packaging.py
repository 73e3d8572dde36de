"""pyproject.toml: a wheel of the repo holds only the lipsync package, installs a `lipsync` command that is
`python -m lipsync`, and is not published under the name of PyPI's unrelated `lipsync`.

The wheel is built offline when this environment's setuptools can (>= 70.1, or with the `wheel` package);
otherwise pip builds it in isolation, fetching setuptools from PyPI first.
"""

from __future__ import annotations

import email.parser
import importlib.util
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import ROOT

DIST_NAME = "lipsync-paddle"
TAKEN_NAME = "lipsync"  # an unrelated project on PyPI
NOT_SHIPPED = ("tests/", "benchmarks/", "webapp/", "examples/", "app.py")
COPY_IGNORED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache")
BUILD_TIMEOUT_S = 300  # with build isolation pip first fetches setuptools from PyPI
RUN_TIMEOUT_S = 120
NEW_ENOUGH_SETUPTOOLS = (70, 1)  # builds wheels by itself; older ones need the `wheel` package too


def _offline_build_possible() -> bool:
    """Whether this environment's setuptools can build the wheel without fetching anything."""
    try:
        import setuptools
    except ImportError:
        return False
    version = tuple(int(part) for part in re.findall(r"\d+", setuptools.__version__)[:2])
    return version >= NEW_ENOUGH_SETUPTOOLS or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout (a build writes egg-info and build/ beside its sources)."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=COPY_IGNORED, symlinks=True)
    isolation = ["--no-build-isolation"] if _offline_build_possible() else []  # else pip fetches setuptools
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(base / "dist"), str(source)]
    done = subprocess.run(build, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = (base / "dist").glob("*.whl")
    return built


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(name).decode())


def test_the_wheel_holds_only_the_package_under_its_own_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "lipsync/__init__.py" in names and "lipsync/cli.py" in names and "lipsync/testing.py" in names
    assert "lipsync/batch/__init__.py" in names and "lipsync/batch/cli.py" in names, "subpackages ship too"
    assert "lipsync/data/gate_inputs.npz" in names, "the precision gate needs its inputs in the wheel"
    assert all(name.startswith(("lipsync/", "lipsync_paddle-")) for name in names), names
    assert not [name for name in names if name.startswith(NOT_SHIPPED)]
    assert re.search(r"^lipsync = lipsync\.cli:entry_point$", entry_points, re.MULTILINE), entry_points
    metadata = _metadata(wheel)
    assert metadata["Name"] == DIST_NAME != TAKEN_NAME
    assert metadata["Version"] == _package_version() and metadata["Requires-Python"] == ">=3.10"


def test_paddle_is_an_extra_and_the_engine_ranges_match_requirements_cpu(wheel: Path) -> None:
    metadata = _metadata(wheel)
    required = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert not [r for r in required if r.lower().startswith("paddle")], "CPU and GPU paddle must be a choice"
    assert {"cpu", "gpu", "hub", "app"} <= set(metadata.get_all("Provides-Extra"))
    extras = {r.split(";")[0]: re.search(r"extra == ['\"](\w+)['\"]", r).group(1)
              for r in metadata.get_all("Requires-Dist") if "extra ==" in r}  # fmt: skip
    assert extras["paddlepaddle==2.6.2"] == "cpu" and extras["paddlepaddle-gpu==2.6.2"] == "gpu", extras
    ours = _by_name(required)
    theirs = _by_name(_requirement_lines(ROOT / "requirements-cpu.txt"))
    for name, spec in theirs.items():
        if not name.startswith(("paddle", "huggingface")):
            assert ours.get(name) == spec, f"{name}: pyproject {ours.get(name)} vs requirements-cpu.txt {spec}"
    assert all(theirs.get(name, spec) == spec for name, spec in ours.items()), (ours, theirs)


def test_the_console_script_is_python_m_lipsync(wheel: Path, tmp_path: Path) -> None:
    """Installed into a fresh venv that sees this venv's packages (paddle, numpy) through a .pth file."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=RUN_TIMEOUT_S)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path))
    (site / "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")  # numpy, paddle, … of this venv
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          str(wheel)], tmp_path)  # fmt: skip
    where = _run([str(python), "-c", "import lipsync; print(lipsync.__file__)"], tmp_path)
    assert Path(where).is_relative_to(venv), f"lipsync imported from {where}, not the installed wheel"
    command = _run([str(venv / "bin" / "lipsync"), "--help"], tmp_path)
    module = _run([str(python), "-m", "lipsync", "--help"], tmp_path)
    assert command == module and command.startswith("usage: ") and "--checkpoint_path" in command
    batch = _run([str(venv / "bin" / "lipsync"), "batch", "--help"], tmp_path)
    assert batch.startswith("usage: python -m lipsync batch") and "--outdir" in batch


def _run(argv: List[str], cwd: Path) -> str:
    """stdout of a command run outside the checkout (so `lipsync` can only come from the installed wheel)."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def _package_version() -> str:
    text = (ROOT / "lipsync" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE).group(1)


def _requirement_lines(path: Path) -> List[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def _by_name(requirements: List[str]) -> Dict[str, str]:
    """'numpy>=1.24,<3' → {'numpy': '<3,>=1.24'}: the version specifiers sorted, so their order does not matter."""
    found = {}
    for requirement in requirements:
        requirement = requirement.split(";")[0].replace(" ", "").replace("(", "").replace(")", "")
        name, spec = re.match(r"([A-Za-z0-9_.\-]+)(.*)", requirement).groups()
        found[re.sub(r"[-_.]+", "-", name).lower()] = ",".join(sorted(spec.split(",")))
    return found
