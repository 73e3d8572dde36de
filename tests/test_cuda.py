"""GPU set-up checked on CPU: the CUDA library links, the one-time re-exec, device choice, the GPU predictor config."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import paddle
import pytest

from lipsync import cuda, device, gated, paddlelib, runtime
from lipsync.errors import LipSyncError

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_WHEELS_ENV = "LIPSYNC_REQUIRE_NVIDIA"  # "1" (set by .ci/space_smoke.sh): the real-wheel tests must run
FAKE_WHEELS = {
    "cudnn": ["libcudnn.so.8", "libcudnn_ops_infer.so.8", "libcudnn_cnn_infer.so.8"],
    "cublas": ["libcublas.so.11", "libcublasLt.so.11"],
    "cuda_runtime": ["libcudart.so.11.0", "libOpenCL.so.1"],
    "cuda_nvrtc": ["libnvrtc.so.11.2", "libnvrtc-builtins.so.11.8"],
}


def _fake_site(root: Path) -> Path:
    """A site-packages folder laid out like the nvidia-*-cu11 wheels (empty files stand in for libraries)."""
    for package, names in FAKE_WHEELS.items():
        lib = root / "nvidia" / package / "lib"
        lib.mkdir(parents=True)
        (lib / "__init__.py").write_text("")
        for name in names:
            (lib / name).write_bytes(b"\x7fELF")
    return root


def _links(folder: Path) -> Dict[str, Path]:
    return {link.name: Path(os.readlink(link)) for link in folder.iterdir()}


def test_link_folder_holds_unversioned_and_versioned_names_in_the_cache(tmp_path):
    site = _fake_site(tmp_path / "site")
    folder = cuda.prepare([site])
    links = _links(folder)
    cudnn = site / "nvidia" / "cudnn" / "lib"
    assert links["libcudnn.so"] == cudnn / "libcudnn.so.8"
    assert links["libcudnn.so.8"] == cudnn / "libcudnn.so.8"  # cuDNN dlopens its parts by versioned name
    assert links["libcudnn_cnn_infer.so.8"] == cudnn / "libcudnn_cnn_infer.so.8"
    assert links["libcublasLt.so"] == site / "nvidia" / "cublas" / "lib" / "libcublasLt.so.11"
    assert links["libnvrtc.so"].name == "libnvrtc.so.11.2"
    assert not any(name.startswith("libOpenCL") for name in links), "would shadow the system OpenCL for ffmpeg"
    assert all(target.is_file() for target in links.values())
    assert folder.is_relative_to(Path(os.environ["LIPSYNC_CACHE"])), "links live in the user cache, not system dirs"


def test_prepare_is_idempotent_and_repairs_changed_links(tmp_path):
    site = _fake_site(tmp_path / "site")
    folder = cuda.prepare([site])
    before = {link.name: link.lstat().st_ino for link in folder.iterdir()}
    assert cuda.prepare([site]) == folder
    assert {link.name: link.lstat().st_ino for link in folder.iterdir()} == before, "right links are not rewritten"

    wanted = cuda.link_names(cuda.find_libraries([site]))
    other = tmp_path / "other.so.8"
    other.write_bytes(b"")
    (folder / "libcudnn.so").unlink()
    os.symlink(other, folder / "libcudnn.so")
    os.symlink(other, folder / "libstale.so")
    cuda.sync_links(folder, wanted)
    assert _links(folder) == wanted


def test_first_site_folder_wins_for_a_library_found_twice(tmp_path):
    first, second = _fake_site(tmp_path / "a"), _fake_site(tmp_path / "b")
    found = cuda.find_libraries([first, second])
    assert found["libcudnn.so.8"] == first / "nvidia" / "cudnn" / "lib" / "libcudnn.so.8"


def test_no_wheels_means_no_folder_and_no_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(cuda, "site_roots", lambda: [tmp_path])
    monkeypatch.setattr(os, "execve", _must_not_exec)
    assert cuda.prepare() is None
    assert cuda.bootstrap() is None


def _must_not_exec(*args):
    raise AssertionError(f"re-executed: {args}")


def test_bootstrap_restarts_once_with_the_folder_first_on_the_library_path(tmp_path, monkeypatch):
    site = _fake_site(tmp_path / "site")
    calls: List[tuple] = []
    monkeypatch.setattr(cuda, "site_roots", lambda: [site])
    monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
    monkeypatch.setenv(cuda.LIBRARY_PATH_ENV, "/opt/other")
    monkeypatch.delenv(cuda.REEXEC_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "paddle")  # as in a fresh entry point
    folder = cuda.bootstrap()
    (executable, argv, env) = calls[0]
    assert executable == sys.executable and argv == [sys.executable, *sys.orig_argv[1:]]
    assert env[cuda.LIBRARY_PATH_ENV].split(os.pathsep) == [str(folder), "/opt/other"]
    assert env[cuda.REEXEC_ENV] == "1"

    calls.clear()
    monkeypatch.setenv(cuda.LIBRARY_PATH_ENV, env[cuda.LIBRARY_PATH_ENV])
    assert cuda.bootstrap() == folder and not calls, "already on the path: nothing to do"
    monkeypatch.setenv(cuda.LIBRARY_PATH_ENV, "")
    monkeypatch.setenv(cuda.REEXEC_ENV, "1")
    assert cuda.bootstrap() == folder and not calls, "the guard stops a second restart"


def test_bootstrap_does_not_restart_once_paddle_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(cuda, "site_roots", lambda: [_fake_site(tmp_path / "site")])
    monkeypatch.setattr(os, "execve", _must_not_exec)
    monkeypatch.delenv(cuda.REEXEC_ENV, raising=False)
    monkeypatch.setenv(cuda.LIBRARY_PATH_ENV, "")
    assert "paddle" in sys.modules  # conftest loaded it
    assert cuda.bootstrap() is not None


@pytest.mark.parametrize("script", ["-", ""], ids=["stdin", "interactive"])
def test_bootstrap_never_restarts_a_session_it_could_not_replay(tmp_path, monkeypatch, script):
    monkeypatch.setattr(cuda, "site_roots", lambda: [_fake_site(tmp_path / "site")])
    monkeypatch.setattr(os, "execve", _must_not_exec)
    monkeypatch.delenv(cuda.REEXEC_ENV, raising=False)
    monkeypatch.setenv(cuda.LIBRARY_PATH_ENV, "")
    monkeypatch.delitem(sys.modules, "paddle")
    monkeypatch.setattr(sys, "argv", [script])
    assert cuda.bootstrap() is not None


def test_a_real_process_restarts_exactly_once(tmp_path):
    """The whole path in a child: bootstrap, exec, guard; the marker prints once per process image."""
    site = _fake_site(tmp_path / "site")
    code = "print('start', flush=True)\nfrom lipsync import cuda\nprint('folder', cuda.bootstrap())\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)]), cuda.LIBRARY_PATH_ENV: ""}
    env.pop(cuda.REEXEC_ENV, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.count("start") == 2, out
    folder = Path(out.split("folder ", 1)[1].strip())
    assert Path(os.readlink(folder / "libcudnn.so")) == site / "nvidia" / "cudnn" / "lib" / "libcudnn.so.8"


def _real_wheel_site() -> Path:
    """The site folder holding the real nvidia-cudnn/cublas wheels, or skip (fail when the smoke test needs them)."""
    for root in cuda.site_roots():
        if (root / "nvidia" / "cudnn" / "lib" / "libcudnn.so.8").is_file():
            return root
    message = "the nvidia-*-cu11 wheels are not installed here (.ci/space_smoke.sh installs them)"
    if os.environ.get(REQUIRE_WHEELS_ENV) == "1":
        pytest.fail(message)
    pytest.skip(message)


def test_real_wheels_dlopen_by_unversioned_name_through_the_links():
    folder = cuda.prepare([_real_wheel_site()])
    names = ["libcudnn.so", "libcublas.so", "libcublasLt.so", "libcudnn_cnn_infer.so.8", "libcudnn_ops_infer.so.8"]
    code = "import ctypes, sys\nfor name in sys.argv[1:]:\n    ctypes.CDLL(name)\nprint('loaded')"
    env = {**os.environ, cuda.LIBRARY_PATH_ENV: ""}
    done = subprocess.run([sys.executable, "-c", code, *names], env=cuda.with_library_path(folder, env),
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr
    if "libcudnn.so" not in cuda.ldconfig_cache():
        plain = subprocess.run([sys.executable, "-c", code, "libcudnn.so"], env=env, capture_output=True, text=True)
        assert plain.returncode != 0, "without the links the name must not resolve, or this test proves nothing"


def test_real_wheels_load_after_bootstrap_in_a_fresh_process():
    site = _real_wheel_site()
    code = "\n".join(["from lipsync import cuda", "cuda.bootstrap()", "import ctypes",
                      "ctypes.CDLL('libcudnn.so')", "ctypes.CDLL('libcublas.so')"])  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)]), cuda.LIBRARY_PATH_ENV: ""}
    env.pop(cuda.REEXEC_ENV, None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


class FakeConfig:
    """Records the Paddle Inference config calls made on it."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []

    def __getattr__(self, name: str):
        return lambda *args: self.calls.append((name, *args))


def test_gpu_config_uses_the_pool_and_paddles_mixed_precision_for_fp16():
    from paddle.inference import PrecisionType

    gpu = runtime.Device("gpu", "Tesla T4")
    half, full = FakeConfig(), FakeConfig()
    runtime._configure(half, gpu, 2, "fp16", 1290)
    runtime._configure(full, gpu, 2, "fp32", 700)
    assert ("enable_use_gpu", 1290, runtime.GPU_DEVICE_ID, PrecisionType.Half) in half.calls
    assert ("enable_use_gpu", 700, runtime.GPU_DEVICE_ID, PrecisionType.Float32) in full.calls
    for config in (half, full):
        names = [call[0] for call in config.calls]
        assert "enable_memory_optim" in names and "switch_ir_optim" in names
        assert not {"disable_gpu", "enable_mkldnn", "enable_onednn", "enable_low_precision_io"} & set(names)


def test_cpu_config_never_touches_the_gpu():
    config = FakeConfig()
    runtime._configure(config, runtime.Device("cpu", "requested"), 2)
    names = [call[0] for call in config.calls]
    assert "disable_gpu" in names and "enable_use_gpu" not in names


def test_gpu_pool_covers_weights_batch_and_headroom_up_to_a_cap(tmp_path):
    prefix = tmp_path / "model"
    prefix.with_suffix(".pdiparams").write_bytes(b"\0" * (10 << 20))
    assert runtime.gpu_pool_mb(prefix, 128, 8.0) == 10 + 128 * 8 + runtime.GPU_POOL_HEADROOM_MB
    assert runtime.gpu_pool_mb(prefix, 4096, 8.0) == runtime.GPU_POOL_MAX_MB


class FakePredictor:
    """Stands in for a GPU predictor: fp16 output differs from fp32 by `HALF_SHIFT` (pixels in [0, 1])."""

    HALF_SHIFT = 0.0
    made: List[tuple] = []
    closed: List[str] = []

    def __init__(self, prefix, device, threads=None, precision="fp32", pool_mb=runtime.GPU_MEMORY_POOL_MB,
                 scope="all", lanes=1):  # fmt: skip
        if precision == "fp16" and FakePredictor.HALF_SHIFT is None:
            raise RuntimeError("no fp16 kernel for this op")
        FakePredictor.made.append((precision, pool_mb))
        self.precision, self.scope = precision, scope
        self.verdict = None

    def run(self, *arrays):
        shift = FakePredictor.HALF_SHIFT if self.precision == "fp16" else 0.0
        return [np.linspace(0, 1, 4096, dtype=np.float32).reshape(1, 1, 64, 64) + shift]

    def close(self):
        FakePredictor.closed.append(self.precision)

    forget = close


def _pixels(output):
    return (np.nan_to_num(output, nan=-1.0).clip(0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize(
    "shift, expected",
    [(1 / 255, "fp16"), (30 / 255, "fp32"), (np.nan, "fp32"), (None, "fp32")],
    ids=["one-level-drift", "thirty-levels-off", "nan", "fp16-refused"],
)
def test_gpu_keeps_fp16_only_when_the_gate_passes_its_pixels(monkeypatch, tmp_path, shift, expected):
    monkeypatch.setattr(runtime, "Predictor", FakePredictor)
    monkeypatch.setattr(FakePredictor, "HALF_SHIFT", shift)
    monkeypatch.setattr(FakePredictor, "made", [])
    monkeypatch.setattr(FakePredictor, "closed", [])
    monkeypatch.setattr(paddle.device.cuda, "get_device_name", lambda index=0: "Tesla T4")
    gpu = runtime.Device("gpu", "Tesla T4")
    chosen = gated.predictor(tmp_path / "model", gpu, "auto", lambda: (np.zeros(1),), _pixels, pool_mb=1290)
    assert chosen.precision == expected and chosen.verdict is not None and chosen.verdict.precision == "fp16"
    made = [precision for precision, _ in FakePredictor.made]
    assert sorted(FakePredictor.closed + [expected]) == sorted(made), "the predictor not kept is closed"
    assert {pool for _, pool in FakePredictor.made} == {1290}


def _gpu_like(monkeypatch, compiled=True, count=1, missing=(), probe=None) -> None:
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: compiled)
    monkeypatch.setattr(paddlelib, "compiled_with_cuda", lambda: compiled)  # what device choice asks
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: count)
    monkeypatch.setattr(paddle.device.cuda, "get_device_name", lambda index=0: "Tesla T4")
    monkeypatch.setattr(cuda, "missing_libraries", lambda names=cuda.REQUIRED: list(missing))
    monkeypatch.setattr(device, "_probe_kernel", lambda: probe)


@pytest.mark.parametrize(
    "machine, reason",
    [
        (dict(compiled=False), "no CUDA"),
        (dict(count=0), "no CUDA device is visible"),
        (dict(missing=["libcudnn.so"]), "libcudnn.so not found"),
        (dict(probe="a test network failed on the GPU (no kernel image)"), "no kernel image"),
    ],
    ids=["cpu-paddle", "no-gpu", "no-cudnn", "kernel-fails"],
)
def test_auto_falls_back_to_cpu_and_says_why_once(monkeypatch, caplog, machine, reason):
    _gpu_like(monkeypatch, **machine)
    monkeypatch.setattr(device, "_ANNOUNCED", set())
    with caplog.at_level(logging.INFO, logger=device.__name__):
        first, second = runtime.choose_device("auto"), runtime.choose_device("auto")
    assert first == second and first.kind == "cpu" and reason in first.reason
    assert [r.getMessage() for r in caplog.records] == [first.reason], "logged once per process"
    with pytest.raises(LipSyncError, match=reason):
        runtime.choose_device("gpu")


def test_auto_takes_a_working_gpu(monkeypatch):
    _gpu_like(monkeypatch)
    assert runtime.choose_device("auto") == runtime.Device("gpu", "Tesla T4")
    assert runtime.choose_device("gpu").kind == "gpu"
    assert runtime.choose_device("cpu").kind == "cpu"

