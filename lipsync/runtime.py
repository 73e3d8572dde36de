"""Paddle Inference predictors: static export cached per weights file, oneDNN on CPU, GPU when usable, batching."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from . import cpu, native
from . import precision as gate
from .device import GPU_DEVICE_ID, Device, choose_device  # noqa: F401  (callers use runtime.Device)
from .errors import LipSyncError, first_line

log = logging.getLogger(__name__)

EXPORT_FORMAT_VERSION = 1  # bump when the export recipe changes, so stale exports are rebuilt
LEGACY_PROGRAM_SUFFIX = ".pdmodel"  # the program file paddle 2.x (and 3.x with PIR off) writes
PIR_PROGRAM_SUFFIX = ".json"  # the program file paddle 3.x writes by default
GPU_MEMORY_POOL_MB = 512  # initial GPU pool when the caller does not size one; paddle grows it on demand
GPU_POOL_HEADROOM_MB = 256  # cuDNN workspaces and paddle's own buffers, beyond weights and activations
GPU_POOL_MAX_MB = 4096  # reserved up front at most: the generator and S3FD share one 16 GB T4
# Lower-cased words in an error that mean GPU (or host) memory ran out: paddle's allocator, then CUDA's, cuDNN's
# and cuBLAS's status names and codes as paddle quotes them ("CUDNN error(2), CUDNN_STATUS_ALLOC_FAILED").
OOM_MARKERS = (
    "out of memory",
    "resourceexhausted",
    "cudaerrormemoryallocation",
    "cuda error(2)",
    "cudnn_status_alloc_failed",
    "cudnn error(2)",
    "cublas_status_alloc_failed",
    "cublas error(3)",
)
MKLDNN_SHAPE_CACHE = 8  # oneDNN kernels kept per distinct input shape (batch tails, frame sizes)
MIN_BATCH = 1
PASS_STATS = re.compile(r"^---\s")  # paddle's IR-pass statistics lines ("---    squashed 6 quantize op")

InputSpec = Tuple[Tuple[Optional[int], ...], str]  # shape with None for free dims, dtype



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

    input_spec = [PaddleSpec(list(_free_dims(shape)), dtype) for shape, dtype in specs]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        # paddle keeps dygraph/static mode per thread, and a thread takes its first mode from whatever another
        # thread last set: a server thread could start in static mode (a to_static elsewhere), where a built
        # layer's parameters are graph variables ("Can not find Variable 'conv2d_0.w_0' in the Scope")
        with paddle.base.dygraph.guard():
            static = paddle.jit.to_static(build(), input_spec=input_spec, full_graph=True)
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
    for suffix in (LEGACY_PROGRAM_SUFFIX, PIR_PROGRAM_SUFFIX):
        path = prefix.with_suffix(suffix)
        if path.exists() and prefix.with_suffix(".pdiparams").exists():
            return path
    return None


class Predictor:
    """One Paddle Inference predictor, created and run on a thread of its own.

    Paddle Inference keeps oneDNN primitives and scratch memory per calling thread; a server calls from
    whichever worker thread serves the request, and a predictor run from a new thread failed now and then
    ("could not execute a primitive", seen on an AMX Xeon). So every call is handed to the one thread that
    created it: calls are serialised, concurrent callers can share it, and the thread count stays fixed.
    """

    def __init__(
        self,
        prefix: Path,
        device: Device,
        threads: Optional[int] = None,
        precision: str = "fp32",
        pool_mb: int = GPU_MEMORY_POOL_MB,
    ):
        from paddle import inference

        model_file = _model_file(prefix)
        if model_file is None:
            raise LipSyncError(f"static model missing under {prefix.parent}; delete that folder and run again")
        config = inference.Config(str(model_file), str(prefix.with_suffix(".pdiparams")))
        _configure(config, device, threads or cpu.cpu_threads(), precision, pool_mb,
                   memory_optim=model_file.suffix == LEGACY_PROGRAM_SUFFIX)
        if precision == "bf16":
            config.enable_mkldnn_bfloat16()
        self.device = device
        self.precision = precision
        self.verdict: Optional[gate.Verdict] = None  # the gate's measurement, when one chose the precision
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"lipsync-{prefix.parent.name[:8]}")
        try:
            self._predictor = self._thread.submit(_create_predictor, config).result()
        except BaseException:
            self._thread.shutdown(wait=False)
            raise
        self._inputs = self._predictor.get_input_names()

    def run(self, *arrays: np.ndarray) -> List[np.ndarray]:
        """Feed arrays in input order and return every output as numpy (on the predictor's own thread)."""
        if self._predictor is None:
            raise RuntimeError("this predictor is closed")
        return self._thread.submit(self._run, *arrays).result()

    def close(self) -> None:
        """Let the predictor go and end its thread (a predictor that is never used again)."""
        self._predictor = None
        self._thread.shutdown(wait=True)

    def _run(self, *arrays: np.ndarray) -> List[np.ndarray]:
        predictor = self._predictor
        for name, array in zip(self._inputs, arrays):
            handle = predictor.get_input_handle(name)
            handle.reshape(array.shape)
            handle.copy_from_cpu(np.ascontiguousarray(array))
        predictor.run()
        return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


def _create_predictor(config: "object") -> "object":
    from paddle import inference

    with native.held_back(PASS_STATS, "paddle"):  # bf16 passes print statistics straight to stderr
        return inference.create_predictor(config)


def _configure(
    config: "object",
    device: Device,
    threads: int,
    precision: str = "fp32",
    pool_mb: int = GPU_MEMORY_POOL_MB,
    memory_optim: bool = True,
) -> None:
    """Paddle Inference settings; memory_optim only for legacy programs: paddle 3.3's predictor fails on a PIR
    program with it ("Not find predictor_id 0 and pass_name memory_optimize_pass")."""
    config.disable_glog_info()
    config.switch_ir_optim(True)
    if memory_optim:
        config.enable_memory_optim()
    if device.kind == "gpu":
        _configure_gpu(config, precision, pool_mb)
        return
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(threads)
    enable = getattr(config, "enable_onednn", None) or config.enable_mkldnn
    enable()
    config.set_mkldnn_cache_capacity(MKLDNN_SHAPE_CACHE)


def _configure_gpu(config: "object", precision: str, pool_mb: int) -> None:
    """GPU 0 with an initial pool of `pool_mb`; fp16 is Paddle Inference's GPU mixed precision (fp32 in and out)."""
    from paddle.inference import PrecisionType

    mode = PrecisionType.Half if precision == "fp16" else PrecisionType.Float32
    config.enable_use_gpu(pool_mb, GPU_DEVICE_ID, mode)


def gpu_pool_mb(prefix: Path, batch: int, item_mb: float) -> int:
    """Initial GPU pool for a predictor: its weights, `batch` items of `item_mb` activations each, and headroom."""
    weights_mb = prefix.with_suffix(".pdiparams").stat().st_size / (1 << 20)
    return int(min(GPU_POOL_MAX_MB, math.ceil(weights_mb + batch * item_mb + GPU_POOL_HEADROOM_MB)))


def is_out_of_memory(exc: BaseException) -> bool:
    """Paddle reports OOM as MemoryError, or as an error quoting paddle's, CUDA's, cuDNN's or cuBLAS's words for it."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(marker in text for marker in OOM_MARKERS)


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


Probe = Callable[[], Sequence[np.ndarray]]  # the gate's fixed inputs for one network, made only when measured


def gated_predictor(prefix: Path, device: Device, wanted: str, probe: Optional[Probe], pixels: gate.Pixels,
                    pool_mb: int = GPU_MEMORY_POOL_MB, threads: Optional[int] = None) -> Predictor:  # fmt: skip
    """A predictor in the precision `wanted` names: fp32, a faster one by name, or (auto) the device's faster one
    when the perceptual gate passes it on `probe` (measured once per export and machine, then remembered)."""
    if wanted != "auto":
        if wanted != "fp32":
            gate.check_forced(wanted, device)
        return Predictor(prefix, device, threads=threads, precision=wanted, pool_mb=pool_mb)
    faster = gate.faster_precision(device)
    if faster is None or probe is None:
        return Predictor(prefix, device, threads=threads, pool_mb=pool_mb)
    machine = gate.machine_key(device, paddle_version())
    verdict = gate.cached(prefix.parent, faster, machine)
    if verdict is None:
        return _measured_predictor(prefix, device, faster, probe(), pixels, pool_mb, threads, machine)
    chosen = faster if verdict.passed else "fp32"
    predictor = Predictor(prefix, device, threads=threads, precision=chosen, pool_mb=pool_mb)
    predictor.verdict = verdict
    return predictor


def _measured_predictor(prefix: Path, device: Device, faster: str, probe: Sequence[np.ndarray],
                        pixels: gate.Pixels, pool_mb: int, threads: Optional[int], machine: str) -> Predictor:
    """Both precisions on the probe; the faster one is kept only if the gate passes it; the verdict is remembered."""
    exact = Predictor(prefix, device, threads=threads, pool_mb=pool_mb)
    fast = None
    try:
        fast = Predictor(prefix, device, threads=threads, precision=faster, pool_mb=pool_mb)
        verdict = gate.compare(lambda *a: exact.run(*a)[0], lambda *a: fast.run(*a)[0], probe, pixels, faster)
    except Exception as exc:  # an older oneDNN may refuse bf16 for some op, a GPU fp16: fp32 still works
        verdict = gate.Verdict(faster, math.nan, math.nan, 0, False, problem=first_line(exc))
    gate.remember(prefix.parent, machine, verdict)
    kept, dropped = (fast, exact) if verdict.passed else (exact, fast)
    if dropped is not None:
        dropped.close()  # its thread ends with it
    log.info("precision gate on this %s: %s", device.kind.upper(), verdict.describe())
    kept.verdict = verdict
    return kept
