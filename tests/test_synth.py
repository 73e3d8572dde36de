"""Short batches on CPU run in power-of-two pieces: the same mouths as padding, without drawing padded frames."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync import runtime, synth


@pytest.mark.parametrize("count, pieces", [(1, [1]), (7, [4, 2, 1]), (13, [8, 4, 1]), (16, [16])])
def test_power_of_two_pieces(count: int, pieces: list) -> None:
    assert synth.power_of_two_pieces(count) == pieces
    assert sum(pieces) == count


class _Recorder:
    """A stand-in predictor that records the batch shapes it is run on; each output row depends on its own input."""

    def __init__(self) -> None:
        self.sizes: list = []

    def __call__(self, mels: np.ndarray, faces: np.ndarray) -> list:
        self.sizes.append(len(mels))
        return [mels * 2 + faces.sum(axis=(1, 2, 3), keepdims=True)]


@pytest.mark.parametrize("count", [1, 5, 11, 15, 16])
def test_pieces_and_padding_give_the_same_rows(count: int) -> None:
    rng = np.random.default_rng(count)
    mels = rng.normal(size=(count, 1, 80, 16)).astype(np.float32)
    faces = rng.normal(size=(count, 6, 4, 4)).astype(np.float32)
    padded, pieces = _Recorder(), _Recorder()
    expected = synth.generate(runtime.BatchRunner(padded, 16), mels, faces, pad=True)
    got = synth.generate(runtime.BatchRunner(pieces, 16), mels, faces, pad=False)
    np.testing.assert_array_equal(got, expected)
    assert padded.sizes == [16]
    assert pieces.sizes == synth.power_of_two_pieces(count), "no padded frame is drawn on CPU"
