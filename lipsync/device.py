"""Where the networks run: the CPU, or GPU 0 when paddle has CUDA, the libraries load and a probe of our ops
gives the CPU's numbers; the reason for the choice is kept for status lines."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from .errors import LipSyncError, first_line

log = logging.getLogger(__name__)

GPU_DEVICE_ID = 0
# The GPU probe: a tiny network of the ops our networks run (shapes N, C, H, W), checked against the CPU.
PROBE_SHAPE = (1, 2, 4, 4)
PROBE_ATOL = 5e-3  # on sigmoid outputs in (0, 1): TF32/Winograd rounding passes, a wrong kernel does not
BN_EPSILON = 1e-5  # paddle's BatchNorm2D default, as in our networks
NO_CUDA_BUILD = "this paddle build has no CUDA; the GPU needs paddlepaddle-gpu from requirements.txt"


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
    from . import cuda, paddlelib

    if not paddlelib.compiled_with_cuda():  # asked without importing paddle (a CPU run may never need it)
        return NO_CUDA_BUILD
    import paddle

    try:
        if paddle.device.cuda.device_count() < 1:
            return "no CUDA device is visible"
    except Exception as exc:  # paddle raises assorted errors when the driver or libraries are missing
        return f"CUDA is not usable ({first_line(exc)})"
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
        return f"a test network failed on the GPU ({first_line(exc)})"
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
