"""Paddle Inference predictors: static export cached per weights file, oneDNN on CPU (in lanes), GPU when usable."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from . import cpu, native, paddlelib
from . import precision as gate
from .device import GPU_DEVICE_ID, Device, choose_device  # noqa: F401  (callers use runtime.Device)
from .errors import LipSyncError

log = logging.getLogger(__name__)

EXPORT_FORMAT_VERSION = 2  # bump when the export recipe changes, so stale exports are rebuilt
LEGACY_PROGRAM_SUFFIX = ".pdmodel"  # the program file paddle 2.x (and 3.x with PIR off) writes
PIR_PROGRAM_SUFFIX = ".json"  # the program file paddle 3.x writes by default
GPU_MEMORY_POOL_MB = 512  # initial GPU pool when the caller does not size one; paddle grows it on demand
GPU_POOL_HEADROOM_MB = 256  # cuDNN workspaces and paddle's own buffers, beyond weights and activations
GPU_POOL_MAX_MB = 4096  # reserved up front at most: the generator and S3FD share one 16 GB T4
OPTIMIZED_FORMAT_VERSION = 1  # bump when what is kept of paddle's IR passes changes
OPTIMIZED_DIR = "optimized-{precision}-{key}"  # beside the export: its program after paddle's passes, per CPU
OPTIMIZED_STEM = "_optimized"  # the file name paddle's enable_save_optim_model writes (.pdmodel, .pdiparams)
OPTIMIZED_SEAL = "sealed.json"  # beside them: what they were when written (a damaged program crashes paddle)
MKLDNN_SHAPE_CACHE = 8  # oneDNN kernels kept per distinct input shape (batch tails, frame sizes)
PASS_STATS = re.compile(r"^---\s")  # paddle's IR-pass statistics lines ("---    squashed 6 quantize op")

InputSpec = Tuple[Tuple[Optional[int], ...], str]  # shape with None for free dims, dtype
T = TypeVar("T")



def paddle_version() -> str:
    return paddlelib.version()


def export_key(weights: Path, arch: str) -> str:
    """A cache key for one weights file's static export: changes when the file or paddle changes."""
    stat = weights.stat()
    ident = f"{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{arch}|{paddle_version()}|{EXPORT_FORMAT_VERSION}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def exported(target: Path) -> Optional[Path]:
    """The model prefix of the static program export_static wrote under target, if it is there."""
    prefix = target / "model"
    return prefix if _model_file(prefix) is not None else None


def export_static(build: Callable[[], "object"], specs: Sequence[InputSpec], target: Path) -> Path:
    """Trace the layer from build() into a static program under target; returns the model prefix."""
    prefix = exported(target)
    if prefix is not None:
        return prefix
    prefix = target / "model"
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


def _publish(staging: Path, target: Path, stem: str = "model") -> None:
    """Move a finished export into place; a concurrent exporter that won the race is fine."""
    try:
        os.replace(staging, target)
    except OSError:
        if _model_file(target / stem) is None:
            raise


def _model_file(prefix: Path) -> Optional[Path]:
    """The program file paddle wrote: .pdmodel (paddle 2.x) or .json (paddle 3 PIR)."""
    for suffix in (LEGACY_PROGRAM_SUFFIX, PIR_PROGRAM_SUFFIX):
        path = prefix.with_suffix(suffix)
        if path.exists() and prefix.with_suffix(".pdiparams").exists():
            return path
    return None


class Predictor:
    """A Paddle Inference predictor in one or more lanes, each created and run on a thread of its own.

    Paddle Inference keeps oneDNN primitives and scratch memory per calling thread; a server calls from
    whichever worker thread serves the request, and a predictor run from a new thread failed now and then
    ("could not execute a primitive", seen on an AMX Xeon). So every call is handed to the thread that
    created its lane: calls are serialised per lane, concurrent callers can share it, the threads stay fixed.

    With `lanes` > 1 the CPU threads are shared out between that many copies of the predictor (paddle's
    clones: one set of weights), and run() splits each batch between them. A lane waits for nobody inside a
    batch: with two batches in flight (see lipsync.synth.Ahead) a lane whose core was taken by the encoder
    for a while delays only its own half, while with one predictor on both cores each of its ~100 operators
    waits at a barrier for the slower thread. The outputs are one predictor's to float rounding (half a batch
    may take another oneDNN kernel than the whole; Wav2Lip's still decoder gave the same bits either way).
    """

    def __init__(
        self,
        prefix: Path,
        device: Device,
        threads: Optional[int] = None,
        precision: str = "fp32",
        pool_mb: int = GPU_MEMORY_POOL_MB,
        scope: str = gate.ALL_OPS,
        lanes: int = 1,
    ):
        model_file = _model_file(prefix)
        if model_file is None:
            raise LipSyncError(f"static model missing under {prefix.parent}; delete that folder and run again")
        self.device = device
        self.precision = precision
        self.scope = scope
        self.verdict: Optional[gate.Verdict] = None  # the gate's measurement, when one chose the precision
        total = threads or cpu.cpu_threads()
        count = lane_count(device, total, lanes)
        settings = _Settings(device, total // count, precision, scope, pool_mb)
        self.optimized = _optimized_folder(prefix, model_file, settings)  # its kept optimised program, if any
        name = f"lipsync-{prefix.parent.name[:8]}"
        self._lanes: List[_Lane] = []
        try:
            first = _Lane(name, lambda: _build_predictor(prefix, model_file, settings, self.optimized))
            self._lanes.append(first)
            self._lanes += [_Lane(name, first.predictor.clone) for _ in range(count - 1)]
        except BaseException:
            self.close()
            raise
        self._inputs = first.predictor.get_input_names()

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    def run(self, *arrays: np.ndarray) -> List[np.ndarray]:
        """Feed arrays in input order and return every output as numpy. With lanes, the batch (the first
        array's length) is split between them; an input of length 1 beside a longer batch (a still's one
        face's features) goes whole to every lane."""
        if not self._lanes:
            raise RuntimeError("this predictor is closed")
        total = len(arrays[0])
        parts = min(len(self._lanes), total)
        if parts <= 1:
            return self._lanes[0].call(self._run_lane, self._lanes[0], arrays)
        bounds = np.linspace(0, total, parts + 1).round().astype(int)
        pieces = [tuple(a[lo:hi] if len(a) == total else a for a in arrays) for lo, hi in zip(bounds, bounds[1:])]
        pending = [lane.submit(self._run_lane, lane, piece) for lane, piece in zip(self._lanes, pieces)]
        outputs = [future.result() for future in pending]
        return [np.concatenate(parts_of_one) for parts_of_one in zip(*outputs)]

    def forget(self) -> None:
        """Close it and delete its kept optimised program: a precision the gate dropped, or one that failed to
        run, should not keep ~100 MB of cache for a program no run will load."""
        self.close()
        if self.optimized is not None:
            shutil.rmtree(self.optimized, ignore_errors=True)

    def close(self) -> None:
        """Let the predictor go and end its threads (a predictor that is never used again)."""
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.close()

    def _run_lane(self, lane: "_Lane", arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        predictor = lane.predictor
        for name, array in zip(self._inputs, arrays):
            handle = predictor.get_input_handle(name)
            handle.reshape(array.shape)
            paddlelib.copy_in(handle, np.ascontiguousarray(array))
        predictor.run()
        return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


def lane_count(device: Device, threads: int, lanes: int) -> int:
    """Lanes a predictor gets: on a CPU, `lanes` when the threads share out evenly between them (1 otherwise);
    one on a GPU, which overlaps batches itself."""
    if device.kind != "cpu" or lanes <= 1 or threads < lanes or threads % lanes:
        return 1
    return lanes


class _Lane:
    """A thread of its own and the paddle predictor `make` creates on it."""

    def __init__(self, name: str, make: Callable[[], "object"]):
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        try:
            self.predictor = self.call(make)
        except BaseException:
            self._thread.shutdown(wait=False)
            raise

    def submit(self, fn: Callable[..., T], *args: object) -> "Future[T]":
        return self._thread.submit(fn, *args)

    def call(self, fn: Callable[..., T], *args: object) -> T:
        return self._thread.submit(fn, *args).result()

    def close(self) -> None:
        self.predictor = None
        self._thread.shutdown(wait=True)


@dataclasses.dataclass(frozen=True)
class _Settings:
    """What a predictor is made for: where it runs, its threads, precision (and bf16 scope) and GPU pool."""

    device: Device
    threads: int
    precision: str
    scope: str
    pool_mb: int


def _build_predictor(prefix: Path, model_file: Path, settings: _Settings, optimized: Optional[Path]) -> "object":
    """A Paddle Inference predictor for the export at `prefix`. On a CPU, paddle's IR passes (0.1-0.6 s a network,
    most for bf16) run once: their result is kept in `optimized`, per precision and CPU, and loaded after."""
    if optimized is not None and _sealed(optimized):
        try:
            return _create_predictor(_optimized_config(optimized / OPTIMIZED_STEM, settings))
        except Exception as exc:  # a program paddle refuses: passes run again and it is written anew
            log.info("the optimized program in %s could not be loaded (%s); optimizing again", optimized, exc)
            shutil.rmtree(optimized, ignore_errors=True)
    elif optimized is not None and optimized.exists():  # damaged (or left by a crash): written anew
        shutil.rmtree(optimized, ignore_errors=True)
    config = _export_config(prefix, model_file, settings)
    staging = _saving_to(config, optimized)
    try:
        predictor = _create_predictor(config)
        if staging is not None and optimized is not None:
            _seal(staging)
            _publish(staging, optimized, OPTIMIZED_STEM)
        return predictor
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _optimized_folder(prefix: Path, model_file: Path, settings: _Settings) -> Optional[Path]:
    """Where the IR-optimised program of this export, precision and CPU is kept: CPU and paddle 2.x-style
    programs only (a GPU's passes depend on its libraries; paddle 3's PIR programs are left as they are)."""
    if settings.device.kind != "cpu" or model_file.suffix != LEGACY_PROGRAM_SUFFIX:
        return None
    ident = (f"{OPTIMIZED_FORMAT_VERSION}|{settings.precision}|{settings.scope}|{paddle_version()}|"
             f"{cpu.cpu_model()}|{' '.join(sorted(cpu.cpu_flags()))}")  # fmt: skip
    return prefix.parent / OPTIMIZED_DIR.format(precision=settings.precision,
                                                key=hashlib.sha256(ident.encode()).hexdigest()[:12])


def _seal(folder: Path) -> None:
    """Note what the optimised program's files are (the program's sha256, the parameters' size): paddle crashes
    the process, rather than raising, on a damaged program, so one is checked before it is loaded."""
    stem = folder / OPTIMIZED_STEM
    (folder / OPTIMIZED_SEAL).write_text(json.dumps(_fingerprint(stem)))


def _sealed(folder: Path) -> bool:
    """Whether `folder` holds an optimised program whose files are as they were written."""
    try:
        return json.loads((folder / OPTIMIZED_SEAL).read_text()) == _fingerprint(folder / OPTIMIZED_STEM)
    except (OSError, ValueError):
        return False


def _fingerprint(stem: Path) -> dict:
    program = stem.with_suffix(LEGACY_PROGRAM_SUFFIX).read_bytes()
    return {"program_sha256": hashlib.sha256(program).hexdigest(),
            "parameters_bytes": stem.with_suffix(".pdiparams").stat().st_size}  # fmt: skip


def _export_config(prefix: Path, model_file: Path, settings: _Settings) -> "object":
    """The export's program with paddle's IR passes to run (and bf16 placed on the scope's ops)."""
    config = paddlelib.library().AnalysisConfig(str(model_file), str(prefix.with_suffix(".pdiparams")))
    _configure(config, settings.device, settings.threads, settings.precision, settings.pool_mb,
               memory_optim=model_file.suffix == LEGACY_PROGRAM_SUFFIX)  # fmt: skip
    if settings.precision == "bf16":
        config.enable_mkldnn_bfloat16()
        if gate.scope_ops(settings.scope):
            config.set_bfloat16_op(set(gate.scope_ops(settings.scope)))
    return config


def _optimized_config(stem: Path, settings: _Settings) -> "object":
    """A kept optimised program: its passes (bf16 placement included) already ran, so none run again."""
    config = paddlelib.library().AnalysisConfig(str(stem.with_suffix(LEGACY_PROGRAM_SUFFIX)),
                                                str(stem.with_suffix(".pdiparams")))
    _configure(config, settings.device, settings.threads, settings.precision, settings.pool_mb, ir_optim=False)
    return config


def _saving_to(config: "object", optimized: Optional[Path]) -> Optional[Path]:
    """Have paddle write the optimised program into a new staging folder beside `optimized` (None: not kept)."""
    if optimized is None:
        return None
    try:
        staging = Path(tempfile.mkdtemp(prefix=".optimizing-", dir=optimized.parent))
    except OSError as exc:  # a read-only cache: the passes run on every start
        log.info("cannot keep the optimized program in %s: %s", optimized.parent, exc)
        return None
    config.enable_save_optim_model(True)
    config.set_optim_cache_dir(str(staging))
    return staging


def _create_predictor(config: "object") -> "object":
    with native.held_back(PASS_STATS, "paddle"):  # bf16 passes print statistics straight to stderr
        return paddlelib.library().create_predictor(config)


def _configure(
    config: "object",
    device: Device,
    threads: int,
    precision: str = "fp32",
    pool_mb: int = GPU_MEMORY_POOL_MB,
    memory_optim: bool = True,
    ir_optim: bool = True,
) -> None:
    """Paddle Inference settings; memory_optim only for legacy programs: paddle 3.3's predictor fails on a PIR
    program with it ("Not find predictor_id 0 and pass_name memory_optimize_pass")."""
    config.disable_glog_info()
    config.switch_ir_optim(ir_optim)
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
