"""Predictors in the precision the perceptual gate chose (lipsync/precision.py): fp32, a faster one asked for by
name, or (auto) the device's faster one, in the widest scope of ops the device runs it in, when its pixels pass.
The verdict is measured once per export and machine and remembered beside the export."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from . import precision as gate
from . import runtime
from .device import Device
from .errors import LipSyncError, first_line

log = logging.getLogger(__name__)

Probe = Callable[[], Sequence[np.ndarray]]  # the gate's fixed inputs for one network, made only when measured


def predictor(prefix: Path, device: Device, wanted: str, probe: Optional[Probe], pixels: gate.Pixels,
                    pool_mb: int = runtime.GPU_MEMORY_POOL_MB, threads: Optional[int] = None) -> runtime.Predictor:  # fmt: skip
    """A predictor in the precision `wanted` names: fp32, a faster one by name, or (auto) the device's faster one
    when the perceptual gate passes it on `probe` (measured once per export and machine, then remembered)."""
    if wanted != "auto":
        return _forced_predictor(prefix, device, wanted, probe, pool_mb, threads)
    faster = gate.faster_precision(device)
    if faster is None or probe is None:
        return runtime.Predictor(prefix, device, threads=threads, pool_mb=pool_mb)
    machine = gate.machine_key(device, runtime.paddle_version())
    verdict = gate.cached(prefix.parent, faster, machine)
    if verdict is None:
        return _measured_predictor(prefix, device, faster, probe(), pixels, pool_mb, threads, machine)
    chosen, scope = (faster, verdict.scope) if verdict.passed else ("fp32", gate.ALL_OPS)
    predictor = runtime.Predictor(prefix, device, threads=threads, precision=chosen, pool_mb=pool_mb, scope=scope)
    predictor.verdict = verdict
    return predictor


def _forced_predictor(prefix: Path, device: Device, wanted: str, probe: Optional[Probe], pool_mb: int,
                      threads: Optional[int]) -> runtime.Predictor:  # fmt: skip
    """The precision asked for by name; a faster one in the widest scope that runs the probe (no gate)."""
    if wanted == "fp32" or probe is None:
        if wanted != "fp32":
            gate.check_forced(wanted, device)
        return runtime.Predictor(prefix, device, threads=threads, precision=wanted, pool_mb=pool_mb)
    gate.check_forced(wanted, device)
    inputs = probe()
    fast, problem = _widest_scope(prefix, device, wanted, pool_mb, threads, lambda p: p.run(*inputs))
    if fast is None:
        raise LipSyncError(f"--precision {wanted} failed on this {device.kind.upper()} ({problem}); "
                           "use --precision auto or fp32")  # fmt: skip
    return fast


def _widest_scope(prefix: Path, device: Device, faster: str, pool_mb: int, threads: Optional[int],
                  check: Callable[[runtime.Predictor], object]) -> Tuple[Optional[runtime.Predictor], str]:
    """The faster precision's predictor in the widest scope whose `check` runs (oneDNN may refuse some op only
    when it first runs), with check's result kept in `.checked`; else None and the last problem."""
    problem = ""
    for scope in gate.scopes(faster):
        fast = None
        try:
            fast = runtime.Predictor(prefix, device, threads=threads, precision=faster, pool_mb=pool_mb, scope=scope)
            fast.checked = check(fast)
            return fast, ""
        except Exception as exc:  # an older oneDNN may refuse bf16 for some op, a GPU fp16: fp32 still works
            problem = first_line(exc)
            log.info("%s on every op of scope %r failed: %s", faster, scope, problem)
            if fast is not None:
                fast.forget()
    return None, problem


def _measured_predictor(prefix: Path, device: Device, faster: str, probe: Sequence[np.ndarray],
                        pixels: gate.Pixels, pool_mb: int, threads: Optional[int], machine: str) -> runtime.Predictor:
    """Both precisions on the probe; the faster one is kept only if the gate passes it; the verdict is remembered."""
    exact = runtime.Predictor(prefix, device, threads=threads, pool_mb=pool_mb)
    reference = pixels(exact.run(*probe)[0])

    def judge(fast: runtime.Predictor) -> gate.Verdict:
        verdict = gate.judge(reference, pixels(fast.run(*probe)[0]), faster)
        return dataclasses.replace(verdict, scope=fast.scope)

    fast, problem = _widest_scope(prefix, device, faster, pool_mb, threads, judge)
    verdict = fast.checked if fast is not None else gate.Verdict(faster, math.nan, math.nan, 0, False, problem=problem)
    gate.remember(prefix.parent, machine, verdict)
    kept, dropped = (fast, exact) if verdict.passed else (exact, fast)
    if dropped is not None:
        dropped.forget()  # its thread ends with it, and its kept program goes
    log.info("precision gate on this %s: %s", device.kind.upper(), verdict.describe())
    kept.verdict = verdict
    return kept
