"""What the tests that watch the generator share (test_faults, test_synth): a real predictor wrapped to record its
calls (or to fail some, in a subclass), and an engine whose generators are so wrapped."""

from __future__ import annotations

from typing import Callable, List

import numpy as np

from lipsync.engine import Engine, StillGenerator


class WrappedPredictor:
    """A real predictor whose calls are recorded: `sizes` holds each call's batch size; the rest (device,
    precision, verdict, lanes) is the wrapped predictor's."""

    def __init__(self, predictor) -> None:
        self.predictor, self.sizes = predictor, []

    def run(self, *arrays: np.ndarray) -> List[np.ndarray]:
        self.sizes.append(len(arrays[0]))
        return self.predictor.run(*arrays)

    def __getattr__(self, name: str):
        return getattr(self.predictor, name)


class WrappingEngine(Engine):
    """The engine with its generator (for a picture, the decoder its face encoder feeds) passed through `wrap`;
    `generators` holds the wrapped ones in the order they were asked for."""

    def __init__(self, wrap: Callable[[object], WrappedPredictor], single_job: bool = False) -> None:
        super().__init__(single_job=single_job)
        self.wrap = wrap
        self.generators: List[WrappedPredictor] = []

    def generator(self, options, device):
        wrapped = self.wrap(super().generator(options, device))
        self.generators.append(wrapped)
        return wrapped  # type: ignore[return-value]

    def still_generator(self, options, device):
        split = super().still_generator(options, device)
        wrapped = self.wrap(split.decoder)
        self.generators.append(wrapped)
        return StillGenerator(split.encoder, wrapped)  # type: ignore[arg-type]
