"""paddle's native library loaded alone for a CPU run, and everything that must not change because of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import paddle
import pytest

from lipsync import paddlelib

ROOT = Path(__file__).resolve().parents[1]

# A picture job in a fresh process, as the command line runs one (an engine for one job, --box given); argv: face,
# speech, output, and "paddle" to import paddle first. Prints what was imported.
JOB = """
import json, sys
import lipsync  # first: before paddle (see lipsync/__init__.py)
if sys.argv[4] == "paddle":
    import paddle
from lipsync import paddlelib
options = lipsync.LipSyncOptions(face_detector="haar", box=(130, 330, 170, 360), device="cpu")
result = lipsync.run(sys.argv[1], sys.argv[2], sys.argv[3], options, engine=lipsync.Engine(single_job=True))
print(json.dumps({"paddle": "paddle" in sys.modules, "alone": paddlelib.loaded_alone(), "frames": result.frames,
                  "version": result.paddle}))
"""

# paddlelib in a fresh process; argv: what to do before asking for the library.
LIBRARY = """
import json, sys
from lipsync import paddlelib
if sys.argv[1] == "gpu-build":
    fields = {**paddlelib._version_fields(), "cuda_version": "11.8"}
    paddlelib._version_fields = lambda: fields
if sys.argv[1] == "no-library-file":
    paddlelib._library_path = lambda: None
if sys.argv[1] == "no-version-file":
    paddlelib._version_fields = lambda: {}
version = paddlelib.version()  # from the file: paddle is not imported for it, unless there is no file
library = paddlelib.library()
found = {"paddle_before": "paddle" in sys.modules, "alone": paddlelib.loaded_alone(), "version": version}
import paddle
config = paddle.inference.Config()
x = paddle.to_tensor([[1.0, 2.0], [3.0, 4.0]])
found.update(shared=paddle.base.libpaddle.AnalysisConfig is library.AnalysisConfig,
             same_version=paddle.__version__ == paddlelib.version(),
             config=type(config) is library.AnalysisConfig, dygraph=float((x @ x).sum()))
print(json.dumps(found))
"""


def _child(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _frames(path: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return np.stack(frames)


def test_a_cpu_picture_job_runs_on_the_library_alone_and_draws_the_same_video(media, tmp_path):
    """The command line's picture job never imports paddle's Python, and its video is the one a process that
    imported paddle first makes, frame for frame (the first run also exports the networks the second loads)."""
    whole = _child(JOB, str(media["photo"]), str(media["speech"]), str(tmp_path / "whole.mp4"), "paddle")
    alone = _child(JOB, str(media["photo"]), str(media["speech"]), str(tmp_path / "alone.mp4"), "-")
    assert whole["paddle"] and not whole["alone"]
    assert not alone["paddle"] and alone["alone"], alone
    assert alone["frames"] == whole["frames"] > 0 and alone["version"] == whole["version"] == paddle.__version__
    first, second = _frames(tmp_path / "whole.mp4"), _frames(tmp_path / "alone.mp4")
    assert first.shape == second.shape and np.array_equal(first, second)


WORKS = {"shared": True, "same_version": True, "config": True, "dygraph": 54.0, "version": paddle.__version__}


def test_paddle_imported_after_the_library_alone_shares_it():
    """`import paddle` after the library loaded alone (an export, --doctor) finds it loaded: one library, whose
    classes paddle.inference hands out, and paddle works (dygraph)."""
    assert _child(LIBRARY, "-") == {"paddle_before": False, "alone": True, **WORKS}


@pytest.mark.parametrize("case", ["gpu-build", "no-library-file", "no-version-file"])
def test_a_gpu_build_or_an_unusual_install_gets_the_whole_of_paddle(case):
    """A CUDA build (its libraries and the GPU probe are paddle's own), a paddle without the library file where we
    look, or without its version file: the whole of paddle is imported, and works as ever."""
    assert _child(LIBRARY, case) == {"paddle_before": True, "alone": False, **WORKS}


def test_version_and_cuda_read_from_the_version_file_agree_with_paddle():
    assert paddlelib._version_fields()["full_version"] == paddlelib.version() == paddle.__version__
    assert paddlelib._version_fields()["cuda_version"] == paddlelib.NO_CUDA
    assert paddlelib.compiled_with_cuda() == paddle.is_compiled_with_cuda() is False
    assert paddlelib.library() is paddle.base.libpaddle  # paddle imported: its own library


def test_copy_in_fills_a_predictor_input_with_or_without_paddles_python():
    """copy_in uses copy_from_cpu where paddle's Python added it, else the binding it wraps."""

    class Bound:
        def _copy_from_cpu_bind(self, array):
            self.got = array

    class Wrapped(Bound):
        def copy_from_cpu(self, array):
            self.wrapped = array

    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    bound, wrapped = Bound(), Wrapped()
    paddlelib.copy_in(bound, array)
    paddlelib.copy_in(wrapped, array)
    assert bound.got is array and wrapped.wrapped is array and not hasattr(wrapped, "got")
