"""Loading a run's networks on a thread of their own, while the run decodes its inputs: the device, the predictors,
and what the user should be told about them (Haar standing in for S3FD, the precision the gate chose)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

from . import faces, precision, runtime
from .engine import Enhancer, Engine, StillGenerator, run_detector
from .options import LipSyncOptions


class Background:
    """One call on a thread of its own; result() waits for it and re-raises its error. If the caller fails first,
    the thread still ends by itself (loaded networks stay in the engine's cache for the next run)."""

    def __init__(self, call: Callable[[], object]):
        self._done = threading.Event()
        self._value: object = None
        self._error: Optional[BaseException] = None
        threading.Thread(target=self._run, args=(call,), name="lipsync-load").start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            self._value = call()
        except BaseException as exc:  # handed to result(), in the caller's thread
            self._error = exc
        finally:
            self._done.set()

    def result(self):
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


@dataclass(frozen=True)
class Networks:
    """What a run computes with: the device, the loaded predictors, and notes about them for the user."""

    device: runtime.Device
    generator: Union[runtime.Predictor, StillGenerator]
    detect: Optional[faces.DetectFn]
    enhancer: Optional[Enhancer]
    notes: Tuple[str, ...]
    single_job: bool = False  # the engine's (Engine.single_job): a short generator batch is padded on a CPU too


def load_networks(engine: Engine, options: LipSyncOptions, still: bool) -> Networks:
    """The device and the networks a run needs (the engine's cached ones when warm)."""
    device = runtime.choose_device(options.device)
    generator = engine.still_generator(options, device) if still else engine.generator(options, device)
    detect, notes = run_detector(engine, options, device, still)
    enhancer = engine.enhancer(options, device) if options.face_enhancement else None
    return Networks(device, generator, detect, enhancer, notes + precision_notes(generator, options),
                    engine.single_job)  # fmt: skip


def generator_precision(generator: Union[runtime.Predictor, StillGenerator]) -> str:
    return (generator.decoder if isinstance(generator, StillGenerator) else generator).precision


def precision_notes(generator: Union[runtime.Predictor, StillGenerator], options: LipSyncOptions) -> Tuple[str, ...]:
    """The precision gate's verdict on the generator (the still decoder for a picture), for the user."""
    predictor = generator.decoder if isinstance(generator, StillGenerator) else generator
    note = precision.run_note(predictor.precision, predictor.verdict, options.precision)
    return (note,) if note else ()
