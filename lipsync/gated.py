"""Predictors in the precision the perceptual gate chose (lipsync/precision.py): fp32, a faster one asked for by
name, or (auto) the device's faster one, in the widest scope of ops the device runs it in, when its pixels pass.
The verdict is measured once per export and machine and remembered beside the export."""

from __future__ import annotations

import dataclasses
import functools
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
Make = Callable[..., runtime.Predictor]  # runtime.Predictor with the export, device, threads and lanes given


def predictor(prefix: Path, device: Device, wanted: str, probe: Optional[Probe], pixels: gate.Pixels,
              pool_mb: int = runtime.GPU_MEMORY_POOL_MB, threads: Optional[int] = None,
              lanes: int = 1) -> runtime.Predictor:  # fmt: skip
    """A predictor in the precision `wanted` names: fp32, a faster one by name, or (auto) the device's faster one
    when the perceptual gate passes it on `probe` (measured once per export and machine, then remembered).
    `threads` are shared out between `lanes` (see runtime.Predictor)."""
    make = functools.partial(runtime.Predictor, prefix, device, threads=threads, pool_mb=pool_mb, lanes=lanes)
    if wanted != "auto":
        return _forced_predictor(make, device, wanted, probe)
    faster = gate.faster_precision(device)
    if faster is None or probe is None:
        return make()
    machine = gate.machine_key(device, runtime.paddle_version())
    verdict = gate.cached(prefix.parent, faster, machine)
    if verdict is None:
        return _measured_predictor(make, prefix.parent, faster, probe(), pixels, machine, device)
    chosen, scope = (faster, verdict.scope) if verdict.passed else ("fp32", gate.ALL_OPS)
    predictor = make(precision=chosen, scope=scope)
    predictor.verdict = verdict
    return predictor


def _forced_predictor(make: Make, device: Device, wanted: str, probe: Optional[Probe]) -> runtime.Predictor:
    """The precision asked for by name; a faster one in the widest scope that runs the probe (no gate)."""
    if wanted != "fp32":
        gate.check_forced(wanted, device)
    if wanted == "fp32" or probe is None:
        return make(precision=wanted)
    inputs = probe()
    fast, found = _widest_scope(make, wanted, lambda p: p.run(*inputs), lambda _: True)
    if fast is None:
        raise LipSyncError(f"--precision {wanted} failed on this {device.kind.upper()} ({found}); "
                           "use --precision auto or fp32")  # fmt: skip
    return fast


def _widest_scope(make: Make, faster: str, check: Callable[[runtime.Predictor], object],
                  good: Callable[[object], bool]) -> Tuple[Optional[runtime.Predictor], object]:  # fmt: skip
    """The faster precision's predictor in the widest scope whose `check` runs (oneDNN may refuse some op only when
    it first runs) and is `good` (the gate passes it), with check's result. Else None, and the last check's result
    or, if none ran, the last problem (one line)."""
    found: object = ""
    for scope in gate.scopes(faster):
        fast = None
        try:
            fast = make(precision=faster, scope=scope)
            result = check(fast)
        except Exception as exc:  # an older oneDNN may refuse bf16 for some op, a GPU fp16: fp32 still works
            log.info("%s on the ops of scope %r failed: %s", faster, scope, first_line(exc))
            if fast is not None:
                fast.forget()
            found = found if isinstance(found, gate.Verdict) else first_line(exc)  # numbers say more than errors
            continue
        if good(result):
            return fast, result
        fast.forget()  # measured and refused: a narrower scope keeps more of the network in fp32
        found = result
    return None, found


def _measured_predictor(make: Make, folder: Path, faster: str, probe: Sequence[np.ndarray], pixels: gate.Pixels,
                        machine: str, device: Device) -> runtime.Predictor:  # fmt: skip
    """fp32 and the faster precision (widest scope first) on the probe; the faster one is kept only if the gate
    passes it in some scope; the verdict is remembered."""
    exact = make()
    reference = pixels(exact.run(*probe)[0])

    def judge(fast: runtime.Predictor) -> gate.Verdict:
        verdict = gate.judge(reference, pixels(fast.run(*probe)[0]), faster)
        return dataclasses.replace(verdict, scope=fast.scope)

    fast, found = _widest_scope(make, faster, judge, lambda v: v.passed)  # type: ignore
    if isinstance(found, gate.Verdict):
        verdict = found
    else:
        verdict = gate.Verdict(faster, math.nan, math.nan, 0, False, problem=str(found))
    gate.remember(folder, machine, verdict)
    kept = exact if fast is None else fast
    if fast is not None:
        exact.forget()  # its thread ends with it, and its kept program goes
    log.info("precision gate on this %s: %s", device.kind.upper(), verdict.describe())
    kept.verdict = verdict
    return kept
