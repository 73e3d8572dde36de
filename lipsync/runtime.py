"""Paddle Inference predictors: static export cached per weights file, oneDNN on CPU, GPU when usable, batching."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import LipSyncError

log = logging.getLogger(__name__)

EXPORT_FORMAT_VERSION = 1  # bump when the export recipe changes, so stale exports are rebuilt
GPU_MEMORY_POOL_MB = 512  # initial GPU pool; paddle grows it on demand
MKLDNN_SHAPE_CACHE = 8  # oneDNN kernels kept per distinct input shape (batch tails, frame sizes)
MIN_BATCH = 1
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # CPUs where oneDNN runs bf16 convolutions natively
BF16_MAX_DIFF = 4 / 255  # bf16 is kept only if no output value moves more than this from fp32 …
BF16_MEAN_DIFF = 1 / 255  # … and the average moves less than one 8-bit level
CPUINFO = Path("/proc/cpuinfo")

InputSpec = Tuple[Tuple[Optional[int], ...], str]  # shape with None for free dims, dtype


@dataclass(frozen=True)
class Device:
    """Where a predictor runs, and why that was chosen."""

    kind: str  # "cpu" or "gpu"
    reason: str


def choose_device(requested: str) -> Device:
    """Resolve auto/cpu/gpu to a usable device; 'gpu' that cannot run is the user's error."""
    if requested == "cpu":
        return Device("cpu", "requested")
    problem = _gpu_problem()
    if problem is None:
        return Device("gpu", "paddle has CUDA and a GPU is visible")
    if requested == "gpu":
        raise LipSyncError(f"--device gpu was asked for but no GPU can be used: {problem}. Use --device cpu or auto.")
    return Device("cpu", f"GPU not used: {problem}")


def _gpu_problem() -> Optional[str]:
    import paddle

    if not paddle.is_compiled_with_cuda():
        return "this paddle build has no CUDA (install paddlepaddle-gpu)"
    try:
        if paddle.device.cuda.device_count() < 1:
            return "no CUDA device is visible"
    except Exception as exc:  # paddle raises assorted errors when the driver or libraries are missing
        return f"CUDA is not usable ({exc})"
    return None


def paddle_version() -> str:
    import paddle

    return paddle.__version__


def export_key(weights: Path, arch: str) -> str:
    """A cache key for one weights file's static export: changes when the file or paddle changes."""
    import paddle

    stat = weights.stat()
    ident = f"{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{arch}|{paddle.__version__}|{EXPORT_FORMAT_VERSION}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def export_static(build: Callable[[], "object"], specs: Sequence[InputSpec], target: Path) -> Path:
    """Trace the layer from build() into a static program under target; returns the model prefix."""
    prefix = target / "model"
    if _model_file(prefix) is not None:
        return prefix
    import paddle
    from paddle.static import InputSpec as PaddleSpec

    layer = build()
    input_spec = [PaddleSpec(list(_free_dims(shape)), dtype) for shape, dtype in specs]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        static = paddle.jit.to_static(layer, input_spec=input_spec, full_graph=True)
        paddle.jit.save(static, str(staging / "model"))
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return prefix


def _free_dims(shape: Tuple[Optional[int], ...]) -> Tuple[int, ...]:
    return tuple(-1 if d is None else d for d in shape)


def _publish(staging: Path, target: Path) -> None:
    """Move a finished export into place; a concurrent exporter that won the race is fine."""
    try:
        os.replace(staging, target)
    except OSError:
        if _model_file(target / "model") is None:
            raise


def _model_file(prefix: Path) -> Optional[Path]:
    """The program file paddle wrote: .pdmodel (paddle 2.x) or .json (paddle 3 PIR)."""
    for suffix in (".pdmodel", ".json"):
        path = prefix.with_suffix(suffix)
        if path.exists() and prefix.with_suffix(".pdiparams").exists():
            return path
    return None


class Predictor:
    """One Paddle Inference predictor; run() is serialised so concurrent callers can share it."""

    def __init__(self, prefix: Path, device: Device, threads: Optional[int] = None, precision: str = "fp32"):
        from paddle import inference

        model_file = _model_file(prefix)
        if model_file is None:
            raise LipSyncError(f"static model missing under {prefix.parent}; delete that folder and run again")
        config = inference.Config(str(model_file), str(prefix.with_suffix(".pdiparams")))
        _configure(config, device, threads or os.cpu_count() or 1)
        if precision == "bf16":
            config.enable_mkldnn_bfloat16()
        self.device = device
        self.precision = precision
        self._predictor = inference.create_predictor(config)
        self._inputs = self._predictor.get_input_names()
        self._lock = threading.Lock()

    def run(self, *arrays: np.ndarray) -> List[np.ndarray]:
        """Feed arrays in input order and return every output as numpy."""
        with self._lock:
            for name, array in zip(self._inputs, arrays):
                handle = self._predictor.get_input_handle(name)
                handle.reshape(array.shape)
                handle.copy_from_cpu(np.ascontiguousarray(array))
            self._predictor.run()
            return [self._predictor.get_output_handle(n).copy_to_cpu() for n in self._predictor.get_output_names()]


def _configure(config: "object", device: Device, threads: int) -> None:
    config.disable_glog_info()
    config.switch_ir_optim(True)
    config.enable_memory_optim()
    if device.kind == "gpu":
        config.enable_use_gpu(GPU_MEMORY_POOL_MB, 0)
        return
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(threads)
    enable = getattr(config, "enable_onednn", None) or config.enable_mkldnn
    enable()
    config.set_mkldnn_cache_capacity(MKLDNN_SHAPE_CACHE)


def is_out_of_memory(exc: BaseException) -> bool:
    """Paddle reports OOM as MemoryError or as a RuntimeError mentioning it."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "resourceexhausted" in text


class BatchRunner:
    """Runs a predictor over arrays in chunks of at most `batch`, halving the chunk for good on out-of-memory."""

    def __init__(self, run: Callable[..., List[np.ndarray]], batch: int):
        self._run = run
        self.batch = max(MIN_BATCH, batch)

    def __call__(self, *arrays: np.ndarray) -> List[np.ndarray]:
        total = len(arrays[0])
        parts: List[List[np.ndarray]] = []
        start = 0
        while start < total:
            stop = min(total, start + self.batch)
            try:
                parts.append(self._run(*(a[start:stop] for a in arrays)))
            except Exception as exc:
                if not is_out_of_memory(exc) or self.batch <= MIN_BATCH:
                    raise
                self.batch = max(MIN_BATCH, self.batch // 2)
                log.warning("out of memory: batch size halved to %d", self.batch)
                continue
            start = stop
        return [np.concatenate(outs) for outs in zip(*parts)]


def cpu_flags() -> frozenset:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bf16_capable(flags: Optional[frozenset] = None) -> bool:
    """Whether this CPU runs bf16 convolutions natively (AMX or AVX-512 BF16)."""
    return bool(set(CPU_BF16_FLAGS) & (cpu_flags() if flags is None else flags))


def close_to_fp32(reference: np.ndarray, candidate: np.ndarray) -> bool:
    """Whether a low-precision output stays within the tolerances that keep 8-bit pixels the same."""
    diff = np.abs(reference.astype(np.float32) - candidate.astype(np.float32))
    return bool(np.isfinite(candidate).all() and diff.max() <= BF16_MAX_DIFF and diff.mean() <= BF16_MEAN_DIFF)


def fastest_predictor(prefix: Path, device: Device, probe: Sequence[np.ndarray]) -> Predictor:
    """fp32, or bf16 on CPUs that run it natively when its output on `probe` stays close to fp32's."""
    exact = Predictor(prefix, device)
    if device.kind != "cpu" or not bf16_capable():
        return exact
    try:
        fast = Predictor(prefix, device, precision="bf16")
        close = close_to_fp32(exact.run(*probe)[0], fast.run(*probe)[0])
    except Exception as exc:  # an older oneDNN may refuse bf16 for some op: fp32 still works
        log.info("bf16 unavailable (%s); staying with fp32", exc)
        return exact
    if close:
        log.info("using bf16 on this CPU: outputs within %.3f of fp32", BF16_MAX_DIFF)
        return fast
    log.info("bf16 output drifted from fp32 on this CPU; staying with fp32")
    return exact
