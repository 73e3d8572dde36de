"""Short batches on CPU run in power-of-two pieces: the same mouths as padding, without drawing padded frames."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync import batching, synth


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
    expected = synth.generate(batching.BatchRunner(padded, 16), mels, faces, pad=True)
    got = synth.generate(batching.BatchRunner(pieces, 16), mels, faces, pad=False)
    np.testing.assert_array_equal(got, expected)
    assert padded.sizes == [16]
    assert pieces.sizes == synth.power_of_two_pieces(count), "no padded frame is drawn on CPU"


def test_ahead_hands_results_back_in_order_with_at_most_depth_in_flight() -> None:
    import threading
    import time

    running, most, lock = [0], [0], threading.Lock()

    def draw(index: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02 if index % 2 else 0.001)  # odd chunks finish after the next even one
        with lock:
            running[0] -= 1
        return index

    got = []
    with synth.Ahead(3) as ahead:
        for index in range(10):
            got += ahead.push(lambda index=index: draw(index))
            assert len(got) >= index - 1, "at most depth chunks wait: the oldest comes back before a fourth starts"
        got += ahead.drain()
    assert got == list(range(10)) and most[0] == 3


def test_ahead_of_depth_one_draws_inline_and_errors_reach_the_caller() -> None:
    import threading

    on = []
    with synth.Ahead(1) as ahead:
        assert ahead.push(lambda: on.append(threading.get_ident()) or 7) == [7]
    assert on == [threading.get_ident()]

    def fail() -> int:
        raise ValueError("the generator failed")

    with pytest.raises(ValueError, match="generator failed"):
        with synth.Ahead(2) as ahead:
            assert ahead.push(fail) == []  # started, not yet handed back
            ahead.push(lambda: 1)  # the failed chunk is the oldest: it raises here


def test_ahead_stops_its_threads_when_left() -> None:
    import threading

    before = threading.active_count()
    with synth.Ahead(3) as ahead:
        for index in range(2):
            assert ahead.push(lambda index=index: index) == []
        assert threading.active_count() > before
    assert threading.active_count() == before, "a run's drawing threads end with it"


@pytest.mark.parametrize("frame_bytes,expected", [(0, 3), (1280 * 720 * 3, 3), (1920 * 1080 * 3, 3),
                                                  (2560 * 1440 * 3, 2), (3840 * 2160 * 3, 1)])
def test_chunks_in_flight_hold_frames_within_their_budget(frame_bytes: int, expected: int) -> None:
    depth = synth.chunks_in_flight(frame_bytes, 16)
    assert depth == expected
    assert (depth - 1) * frame_bytes * 16 <= synth.AHEAD_BYTES, "frames drawn ahead stay within the budget"
