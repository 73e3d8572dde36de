"""Which precision a network runs in: fp32, or the device's faster one (bf16 on CPUs with AMX / AVX-512 BF16,
fp16 on a GPU) when a viewer could not tell the difference.

The gate runs the network in both precisions on fixed inputs (real faces and speech, lipsync/data/gate_inputs.npz),
turns both outputs into the 8-bit pixels a run pastes, and keeps the faster precision only when those pixels are
as close to fp32's as the bounds below. Its verdict is measured once per weights file, machine and paddle version
and kept beside the static export, so later runs create one predictor only.

Why these bounds: lipsync's own H.264 encode (CRF 18, yuv420p) moves the lower face of the astronaut photo by
PSNR 38.4 dB, 16 levels at the 99.9th percentile and 33 at most (tools/make_gate_inputs.py's photo). A faster
precision must stay well inside that: 40 dB (the usual "visually lossless" line, and above the codec's own), no
more than 8 levels at the 99.9th percentile (half the codec's), and no pixel more than 16 levels (6 %) away. A mouth
shifted by two pixels fails all three; a drift of one level everywhere passes.

Where bf16 runs: a CPU's oneDNN may refuse bf16 for some op. paddle 2.6.2 on an AMD Zen 4 (AVX-512 BF16, no AMX)
fails a bf16 element-wise add beside a bf16 transposed convolution ("could not construct a memory descriptor using
strides"), so the gate tries the widest scope first (every op), then every convolution with the plain adds in fp32
(the exports fold conv biases into BatchNorm, so none is left beside a transposed conv), then convolutions only
(transposed ones in fp32), moving on when a scope fails to run or fails the bounds. The scope that ran is part of
the verdict.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np

from . import cpu
from .device import Device
from .errors import LipSyncError
from .options import PRECISIONS  # noqa: F401  (what --precision accepts, named where the options are)

log = logging.getLogger(__name__)

MIN_PSNR_DB = 40.0  # the faster precision's pixels against fp32's, at least
MAX_P999_LEVELS = 8.0  # the 99.9th percentile of per-pixel differences, at most (8-bit levels)
MAX_LEVELS = 16  # no pixel further than this from fp32's (8-bit levels)
PERCENTILE = 99.9
PIXEL_PEAK = 255.0
GATE_INPUTS = Path(__file__).resolve().parent / "data" / "gate_inputs.npz"
GATE_VERSION = 3  # bump when the bounds, inputs or measure change: cached verdicts are then measured again
GATE_FILE = "gate-{precision}-{machine}.json"
ALL_OPS = "all"  # the faster precision on every op that has a kernel for it
# bf16 for every convolution, transposed ones too, and the residual adds fused beside them; plain element-wise
# adds (broadcast biases) in fp32: paddle 2.6.2's oneDNN refuses those in bf16 next to a bf16 transposed conv
ALL_CONVOLUTIONS = "all-convolutions"
CONVOLUTIONS = "convolutions"  # bf16 for convolutions and what oneDNN fuses into them; transposed ones in fp32
BF16_SCOPES = {
    ALL_OPS: (),
    ALL_CONVOLUTIONS: ("conv2d", "fused_conv2d", "conv2d_transpose", "relu", "concat", "fused_elementwise_add"),
    CONVOLUTIONS: ("conv2d", "fused_conv2d", "relu", "elementwise_add", "concat"),
}
SCOPE_WORDS = {ALL_OPS: "", ALL_CONVOLUTIONS: " (element-wise adds in fp32)",
               CONVOLUTIONS: " (transposed convolutions in fp32)"}  # fmt: skip
NOTE_START = "The generator ran in "  # how a run's note about its precision begins (the app shows it in its status)

Pixels = Callable[[np.ndarray], np.ndarray]  # network output → uint8 pixels as a run pastes them


@dataclass(frozen=True)
class Verdict:
    """The gate's measurement of one faster precision against fp32 on the fixed inputs."""

    precision: str
    psnr_db: float
    p999_levels: float
    max_levels: int
    passed: bool
    problem: str = ""  # why it could not be measured (the precision failed to run), if so
    scope: str = ALL_OPS  # which ops ran in it (BF16_SCOPES): all, or fewer where oneDNN refused some

    def describe(self) -> str:
        """One line: the numbers and the bounds, for --doctor and a run's notes."""
        if self.problem:
            return f"{self.precision} unavailable ({self.problem})"
        name = f"{self.precision}{SCOPE_WORDS.get(self.scope, '')}"
        psnr = "identical" if math.isinf(self.psnr_db) else f"PSNR {self.psnr_db:.1f} dB"
        bounds = f"≥ {MIN_PSNR_DB:.0f} dB, p99.9 ≤ {MAX_P999_LEVELS:.0f}, max ≤ {MAX_LEVELS} levels"
        verdict = "passed" if self.passed else "failed"
        return (f"{name} against fp32: {psnr}, p99.9 {self.p999_levels:.0f}, max {self.max_levels} "
                f"levels ({verdict}; bounds {bounds})")  # fmt: skip


def judge(reference: np.ndarray, candidate: np.ndarray, precision: str) -> Verdict:
    """Compare two uint8 images (or batches) as a viewer sees them: PSNR, 99.9th percentile and largest difference."""
    diff = np.abs(reference.astype(np.int16) - candidate.astype(np.int16))
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(PIXEL_PEAK**2 / mse)
    p999 = float(np.percentile(diff, PERCENTILE))
    largest = int(diff.max())
    passed = psnr >= MIN_PSNR_DB and p999 <= MAX_P999_LEVELS and largest <= MAX_LEVELS
    return Verdict(precision, psnr, p999, largest, passed)


def faster_precision(device: Device) -> Optional[str]:
    """The precision worth trying on this device beside fp32, or None."""
    if device.kind == "gpu":
        return "fp16"
    return "bf16" if cpu.bf16_capable() else None


def scopes(precision: str) -> Tuple[str, ...]:
    """The scopes to try for a faster precision, widest first (a GPU's fp16 has one)."""
    return tuple(BF16_SCOPES) if precision == "bf16" else (ALL_OPS,)


def scope_ops(scope: str) -> Tuple[str, ...]:
    """The op types a bf16 scope names (empty: every op with a bf16 kernel)."""
    return BF16_SCOPES.get(scope, ())


def check_forced(precision: str, device: Device) -> None:
    """A precision asked for by name must run natively on the device chosen."""
    if precision == "bf16" and (device.kind != "cpu" or not cpu.bf16_capable()):
        where = "a GPU" if device.kind == "gpu" else "this CPU, which has neither AMX nor AVX-512 BF16"
        raise LipSyncError(f"--precision bf16 runs on CPUs with AMX or AVX-512 BF16, not on {where}; "
                           "use --precision auto or fp32")  # fmt: skip
    if precision == "fp16" and device.kind != "gpu":
        raise LipSyncError("--precision fp16 runs on a GPU only; on a CPU use --precision auto, fp32 or bf16")


def gate_inputs() -> Tuple[np.ndarray, np.ndarray]:
    """The fixed gate inputs: (faces B×96×96×3 uint8 BGR, mel windows B×80×16 float32)."""
    with np.load(GATE_INPUTS) as data:
        return data["faces"], data["mels"]


def machine_key(device: Device, paddle_version: str) -> str:
    """Names what a verdict depends on besides the weights: the CPU (its model and bf16 flags) or GPU, and paddle."""
    if device.kind == "gpu":
        where = _gpu_name()
    else:
        where = f"{cpu.cpu_model()}|{','.join(sorted(cpu.cpu_flags() & set(cpu.CPU_BF16_FLAGS)))}"
    text = f"{GATE_VERSION}|{device.kind}|{where}|{paddle_version}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _gpu_name() -> str:
    import paddle

    return paddle.device.cuda.get_device_name(0)


def cached(folder: Path, precision: str, machine: str) -> Optional[Verdict]:
    """The verdict measured before for this export, precision and machine, if any (a damaged file: none)."""
    path = folder / GATE_FILE.format(precision=precision, machine=machine)
    try:
        return Verdict(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def remember(folder: Path, machine: str, verdict: Verdict) -> None:
    """Keep a verdict beside the export; a read-only cache only costs the next run a new measurement."""
    path = folder / GATE_FILE.format(precision=verdict.precision, machine=machine)
    try:
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(asdict(verdict)))
        staging.replace(path)
    except OSError as exc:
        log.info("could not keep the precision verdict in %s: %s", folder, exc)


def run_note(used: str, verdict: Optional[Verdict], wanted: str) -> Optional[str]:
    """What a run's notes say about the generator's precision: the gate's verdict, or that one was forced."""
    if wanted not in ("auto", "fp32"):
        return f"{NOTE_START}{used}, as --precision asked (the gate was not consulted)."
    if verdict is None:
        return None  # fp32 asked for, or no faster precision on this device
    switch = "--precision fp32 turns it off" if used != "fp32" else "--precision forces one"
    return f"{NOTE_START}{used}: {verdict.describe()}; {switch}."
