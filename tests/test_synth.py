"""Short batches on CPU run in power-of-two pieces (the same mouths as padding, without drawing padded frames),
except in a single job (the command line), which pads them: no oneDNN kernels for shapes no later run uses."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest
from engine_helpers import WrappedPredictor, WrappingEngine

import lipsync
from lipsync import batching, cli, pipeline, synth
from lipsync.engine import CPU_GENERATOR_BATCH, Engine
from lipsync.errors import LipSyncError
from lipsync.options import LipSyncOptions

HAAR = LipSyncOptions(face_detector="haar", device="cpu")


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


@pytest.mark.parametrize("single_job", [True, False])
def test_a_single_job_pads_its_short_batch_where_a_lasting_engine_runs_it_in_pieces(media, tmp_path, single_job):
    engine = WrappingEngine(WrappedPredictor, single_job=single_job)
    result = lipsync.run(media["photo"], media["speech"], tmp_path / "out.mp4", HAAR, engine=engine)
    full, tail = divmod(result.frames, CPU_GENERATOR_BATCH)
    assert full and tail, f"{result.frames} frames: the speech should leave a short last batch"
    [decoder] = engine.generators
    sizes = decoder.sizes
    if single_job:  # one batch shape only: every other would have oneDNN reorder and keep the weights again
        assert sizes == [CPU_GENERATOR_BATCH] * (full + 1)
    else:  # a later run of the process finds the pieces' kernels made
        assert sizes == [CPU_GENERATOR_BATCH] * full + synth.power_of_two_pieces(tail)


def test_the_command_line_runs_on_a_single_job_engine(media, tmp_path, monkeypatch):
    engines: List[Engine] = []

    def run(*args, engine=None, **kwargs):
        engines.append(engine)
        raise LipSyncError("stopped by the test")

    monkeypatch.setattr(pipeline, "run", run)
    argv = ["--face", str(media["photo"]), "--audio", str(media["speech"]), "--outfile", str(tmp_path / "o.mp4")]
    assert cli.main([*argv, "--quiet"]) == cli.EXIT_USAGE
    assert len(engines) == 1 and engines[0].single_job
    assert not Engine().single_job, "the API's and the app's engines keep their kernels for later runs"
