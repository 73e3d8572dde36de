"""The encoder's own thread: frames arrive in order, memory stays bounded, failures reach the caller."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lipsync.writeahead import THREAD_NAME, WriteAhead


def _frame(value: int, side: int = 4) -> np.ndarray:
    return np.full((side, side, 3), value, np.uint8)


def _encoder_threads() -> int:
    return sum(thread.name == THREAD_NAME for thread in threading.enumerate())


def test_frames_reach_the_writer_in_order_and_close_waits_for_all() -> None:
    got = []
    with WriteAhead(lambda frame: got.append(int(frame[0, 0, 0])), limit_bytes=_frame(0).nbytes * 3) as ahead:
        for value in range(200):
            ahead.write(_frame(value))
    assert got == list(range(200))
    assert _encoder_threads() == 0, "the thread is joined when the writer closes"


def test_a_slow_encoder_holds_the_caller_back_at_the_byte_limit() -> None:
    release = threading.Event()
    written = []

    def slow(frame: np.ndarray) -> None:
        release.wait(5)
        written.append(frame)

    ahead = WriteAhead(slow, limit_bytes=_frame(0).nbytes * 2)
    ahead.write(_frame(1))  # taken by the thread, which waits
    ahead.write(_frame(2))  # waiting: the limit is reached
    blocked = threading.Thread(target=ahead.write, args=(_frame(3),))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a third frame must wait while two frames' bytes are queued"
    release.set()
    blocked.join(5)
    ahead.close()
    assert [int(f[0, 0, 0]) for f in written] == [1, 2, 3]


def test_a_frame_larger_than_the_limit_still_passes() -> None:
    got = []
    with WriteAhead(got.append, limit_bytes=1) as ahead:
        ahead.write(_frame(5, side=64))
        ahead.write(_frame(6, side=64))
    assert len(got) == 2


def test_the_writers_error_reaches_the_caller() -> None:
    def failing(frame: np.ndarray) -> None:
        raise ValueError("frame size mismatch")

    ahead = WriteAhead(failing)
    ahead.write(_frame(1))
    with pytest.raises(ValueError, match="mismatch"):
        for _ in range(1000):  # raised by a later write, or by close()
            ahead.write(_frame(1))
        ahead.close()
    ahead.abort()
    assert _encoder_threads() == 0


def test_abort_unblocks_a_stuck_writer_and_drops_the_rest() -> None:
    stuck, writing = threading.Event(), threading.Event()
    written = []

    def blocking(frame: np.ndarray) -> None:
        written.append(frame)
        writing.set()
        stuck.wait(10)  # an encoder that stopped reading: only `unblock` frees it

    ahead = WriteAhead(blocking, unblock=stuck.set, limit_bytes=_frame(0).nbytes * 4)
    for value in range(4):
        ahead.write(_frame(value))
    assert writing.wait(5)
    with pytest.raises(RuntimeError):
        with ahead:
            raise RuntimeError("the generator failed")
    assert stuck.is_set() and len(written) == 1, "the queued frames were dropped, not written"
    assert _encoder_threads() == 0
    with pytest.raises(ValueError, match="closed"):
        ahead.write(_frame(9))
