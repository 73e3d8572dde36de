"""Paddle Inference predictors: static export cached per weights file, oneDNN on CPU, GPU when usable, batching."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from . import native
from .errors import LipSyncError

log = logging.getLogger(__name__)

EXPORT_FORMAT_VERSION = 1  # bump when the export recipe changes, so stale exports are rebuilt
LEGACY_PROGRAM_SUFFIX = ".pdmodel"  # the program file paddle 2.x (and 3.x with PIR off) writes
PIR_PROGRAM_SUFFIX = ".json"  # the program file paddle 3.x writes by default
GPU_MEMORY_POOL_MB = 512  # initial GPU pool when the caller does not size one; paddle grows it on demand
GPU_POOL_HEADROOM_MB = 256  # cuDNN workspaces and paddle's own buffers, beyond weights and activations
GPU_POOL_MAX_MB = 4096  # reserved up front at most: the generator and S3FD share one 16 GB T4
GPU_DEVICE_ID = 0
FP16_MAX_DIFF = 1 / 255  # fp16 on GPU is kept only if no output moves more than one 8-bit level from fp32
# The GPU probe: a tiny network of the ops our networks run (shapes N, C, H, W), checked against the CPU.
PROBE_SHAPE = (1, 2, 4, 4)
PROBE_ATOL = 5e-3  # on sigmoid outputs in (0, 1): TF32/Winograd rounding passes, a wrong kernel does not
BN_EPSILON = 1e-5  # paddle's BatchNorm2D default, as in our networks
REASON_CHARS = 160  # of a paddle error quoted in ours
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
NO_CUDA_BUILD = "this paddle build has no CUDA; the GPU needs paddlepaddle-gpu from requirements.txt"
MKLDNN_SHAPE_CACHE = 8  # oneDNN kernels kept per distinct input shape (batch tails, frame sizes)
MIN_BATCH = 1
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # CPUs where oneDNN runs bf16 convolutions natively
BF16_MAX_DIFF = 4 / 255  # bf16 is kept only if no output value moves more than this from fp32 …
BF16_MEAN_DIFF = 1 / 255  # … and the average moves less than one 8-bit level
CPUINFO = Path("/proc/cpuinfo")
PASS_STATS = re.compile(r"^---\s")  # paddle's IR-pass statistics lines ("---    squashed 6 quantize op")

InputSpec = Tuple[Tuple[Optional[int], ...], str]  # shape with None for free dims, dtype


@dataclass(frozen=True)
class Device:
    """Where a predictor runs, and why that was chosen."""

    kind: str  # "cpu" or "gpu"
    reason: str


def choose_device(requested: str, announce: bool = True) -> Device:
    """Resolve auto/cpu/gpu to a usable device; 'gpu' that cannot run is the user's error.

    When `auto` falls back to the CPU, the reason is logged once per process (unless `announce` is False).
    """
    if requested == "cpu":
        return Device("cpu", "requested")
    problem = _gpu_problem()
    if problem is None:
        return Device("gpu", _gpu_name())
    if requested == "gpu":
        raise LipSyncError(f"The GPU was asked for (--device gpu) but cannot be used: {problem}. Choose cpu or auto.")
    reason = f"GPU not used: {problem}"
    if announce:
        _announce(reason, logging.INFO if problem == NO_CUDA_BUILD else logging.WARNING)
    return Device("cpu", reason)


_ANNOUNCED: set = set()


def _announce(reason: str, level: int) -> None:
    if reason not in _ANNOUNCED:
        _ANNOUNCED.add(reason)
        log.log(level, reason)


def _gpu_problem() -> Optional[str]:
    """Why our networks cannot run on GPU 0, or None: a CUDA build, a visible GPU, cuDNN/cuBLAS and a working kernel."""
    import paddle

    from . import cuda

    if not paddle.is_compiled_with_cuda():
        return NO_CUDA_BUILD
    try:
        if paddle.device.cuda.device_count() < 1:
            return "no CUDA device is visible"
    except Exception as exc:  # paddle raises assorted errors when the driver or libraries are missing
        return f"CUDA is not usable ({_first_line(exc)})"
    missing = cuda.missing_libraries()
    if missing:
        return f"{', '.join(missing)} not found (install requirements.txt; start through `python -m lipsync` or app.py)"
    return _probe_kernel()


@functools.lru_cache(maxsize=1)
def _probe_kernel() -> Optional[str]:
    """Run a tiny network of our ops on the GPU and check it against the CPU: catches GPUs this paddle has
    no kernels for (sm_90+), where cuDNN's convolution may work and paddle's own relu/add/concat do not.

    Only call it once a GPU is visible: without one, paddle.CUDAPlace ends the process.
    """
    import paddle

    return check_probe(lambda: probe_network(paddle.CUDAPlace(GPU_DEVICE_ID)))


def check_probe(run_on_gpu: Callable[[], np.ndarray]) -> Optional[str]:
    """None when `run_on_gpu()` gives what probe_network gives on the CPU, else why the GPU is not usable."""
    import paddle

    try:
        got = run_on_gpu()
    except Exception as exc:  # no kernel image for this GPU, cuDNN errors, driver too old: all mean "not usable"
        return f"a test network failed on the GPU ({_first_line(exc)})"
    expected = probe_network(paddle.CPUPlace())
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=PROBE_ATOL):
        return "a test network gave wrong numbers on the GPU"
    return None


def probe_network(place: "object") -> np.ndarray:
    """conv2d (+bias), batch_norm (inference), relu, add, concat, conv2d_transpose, max_pool2d, sigmoid on `place`.

    Fixed inputs and weights in halves keep every stage exact or nearly so on any device, and leaving out any
    one op moves some output by more than 0.1 (20 x PROBE_ATOL).
    """
    import paddle
    import paddle.nn.functional as F

    channels = PROBE_SHAPE[1]

    def tensor(values: np.ndarray) -> "paddle.Tensor":
        return paddle.to_tensor(values.astype(np.float32), place=place)

    x = tensor(_probe_values(PROBE_SHAPE, 5) - 2)  # -2..2
    conv_w = tensor((_probe_values((channels, channels, 3, 3), 3) - 1) / 2)  # -0.5, 0, 0.5
    conv_b = tensor(np.arange(channels) / 2)
    mean, var = tensor(np.full(channels, 0.5)), tensor(np.full(channels, 4.0))
    gamma, beta = tensor(np.arange(1, channels + 1)), tensor(np.full(channels, -0.25))
    up_w = tensor((_probe_values((2 * channels, channels, 2, 2), 3) - 1) / 2)
    with paddle.no_grad():
        y = F.conv2d(x, conv_w, conv_b, padding=1)
        y = F.batch_norm(y, mean, var, gamma, beta, training=False, epsilon=BN_EPSILON)
        y = F.relu(y) + x  # a residual block
        y = paddle.concat([y, x], axis=1)  # a skip connection
        y = F.conv2d_transpose(y, up_w, stride=2)  # the decoder's up-sampling
        y = F.max_pool2d(y, 2, 2)  # the detector's down-sampling
        return F.sigmoid(y).numpy()


def _probe_values(shape: Tuple[int, ...], levels: int) -> np.ndarray:
    """0..levels-1 in a fixed scrambled order (no RNG: the same numbers on every machine and version)."""
    count = int(np.prod(shape))
    return ((np.arange(count) * 7 + 3) % levels).reshape(shape).astype(np.float32)


def _gpu_name() -> str:
    import paddle

    return paddle.device.cuda.get_device_name(GPU_DEVICE_ID)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[0][:REASON_CHARS]


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
    for suffix in (LEGACY_PROGRAM_SUFFIX, PIR_PROGRAM_SUFFIX):
        path = prefix.with_suffix(suffix)
        if path.exists() and prefix.with_suffix(".pdiparams").exists():
            return path
    return None


class Predictor:
    """One Paddle Inference predictor; run() is serialised so concurrent callers can share it."""

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
        _configure(config, device, threads or os.cpu_count() or 1, precision, pool_mb,
                   memory_optim=model_file.suffix == LEGACY_PROGRAM_SUFFIX)
        if precision == "bf16":
            config.enable_mkldnn_bfloat16()
        self.device = device
        self.precision = precision
        with native.held_back(PASS_STATS, "paddle"):  # bf16 passes print statistics straight to stderr
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


def close_to_fp32(
    reference: np.ndarray, candidate: np.ndarray, max_diff: float = BF16_MAX_DIFF, mean_diff: float = BF16_MEAN_DIFF
) -> bool:
    """Whether a low-precision output stays within the tolerances that keep 8-bit pixels the same."""
    diff = np.abs(reference.astype(np.float32) - candidate.astype(np.float32))
    return bool(np.isfinite(candidate).all() and diff.max() <= max_diff and diff.mean() <= mean_diff)


def fastest_predictor(
    prefix: Path, device: Device, probe: Sequence[np.ndarray], pool_mb: int = GPU_MEMORY_POOL_MB
) -> Predictor:
    """fp32, or the faster precision of the device (fp16 on GPU, bf16 on CPUs that run it natively)
    when its output on `probe` stays close to fp32's."""
    exact = Predictor(prefix, device, pool_mb=pool_mb)
    faster = _faster_precision(device)
    if faster is None:
        return exact
    precision, max_diff, mean_diff = faster
    try:
        fast = Predictor(prefix, device, precision=precision, pool_mb=pool_mb)
        close = close_to_fp32(exact.run(*probe)[0], fast.run(*probe)[0], max_diff, mean_diff)
    except Exception as exc:  # an older oneDNN may refuse bf16 for some op, a GPU fp16: fp32 still works
        log.info("%s unavailable (%s); staying with fp32", precision, exc)
        return exact
    if close:
        log.info("using %s on this %s: outputs within %.4f of fp32", precision, device.kind.upper(), max_diff)
        return fast
    log.info("%s output drifted from fp32 on this %s; staying with fp32", precision, device.kind.upper())
    return exact


def _faster_precision(device: Device) -> Optional[Tuple[str, float, float]]:
    """(precision, max diff, mean diff) worth trying on this device, or None."""
    if device.kind == "gpu":
        return "fp16", FP16_MAX_DIFF, FP16_MAX_DIFF
    return ("bf16", BF16_MAX_DIFF, BF16_MEAN_DIFF) if bf16_capable() else None
