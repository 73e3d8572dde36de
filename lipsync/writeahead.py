"""Frames handed to the encoder on a thread of its own, so the generator never waits for ffmpeg's pipe.

Without it a run alternates: the generator draws a batch, then the main thread blocks on the pipe until
ffmpeg has taken the batch's frames (0.43 s of a 6.5 s picture job on 2 cores), and only then is the next
batch started. With it the next batch starts at once while the frames drain behind it.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType
from typing import Callable, Deque, Optional, Type

from .types import Frame

WRITE_AHEAD_BYTES = 64 * 2**20  # frames waiting for the encoder at most: 85 of 512², 10 of 1080p, 2 of 4K
THREAD_NAME = "lipsync-encode"


class WriteAhead:
    """write(frame) queues a frame and returns; a thread of its own passes the frames, in order, to `write`.

    At most `limit_bytes` of frames wait (one at least, however large), so memory stays bounded when the
    encoder is the slower side. close() returns once every frame was written, re-raising what `write`
    raised; abort() drops what waits. As a context manager, an exception aborts. `unblock` is called before
    an abort waits for the thread: it must make a `write` that is stuck return (stop the encoder).
    Callers must not change a frame after handing it over.
    """

    def __init__(self, write: Callable[[Frame], None], unblock: Callable[[], None] = lambda: None,
                 limit_bytes: int = WRITE_AHEAD_BYTES) -> None:  # fmt: skip
        self._write = write
        self._unblock = unblock
        self._limit = limit_bytes
        self._waiting: Deque[Frame] = deque()
        self._bytes = 0  # of frames waiting or being written
        self._error: Optional[BaseException] = None
        self._closing = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._drain, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def write(self, frame: Frame) -> None:
        """Queue `frame`, waiting while the queue is full; raises what the writing thread raised."""
        with self._changed:
            self._changed.wait_for(lambda: self._has_room(frame.nbytes))
            self._raise_failure()
            if self._closing:
                raise ValueError("WriteAhead is closed")
            self._waiting.append(frame)
            self._bytes += frame.nbytes
            self._changed.notify_all()

    def close(self) -> None:
        """Wait until every queued frame is written; raise what writing one raised."""
        self._finish()
        self._raise_failure()

    def abort(self) -> None:
        """Drop the frames still waiting, make the one being written return, and wait for the thread."""
        with self._changed:
            self._bytes -= sum(frame.nbytes for frame in self._waiting)
            self._waiting.clear()
            self._changed.notify_all()
        if self._thread.is_alive():
            self._unblock()
        self._finish()

    def _has_room(self, size: int) -> bool:
        return self._error is not None or self._bytes == 0 or self._bytes + size <= self._limit

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _finish(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()

    def _drain(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._waiting) or self._closing)
                if not self._waiting:
                    return
                frame = self._waiting.popleft()
            try:
                self._write(frame)
            except BaseException as error:  # handed to the caller's next write() or close()
                with self._changed:
                    self._error = error
                    self._waiting.clear()
                    self._bytes = 0
                    self._changed.notify_all()
                return
            with self._changed:
                self._bytes -= frame.nbytes
                self._changed.notify_all()

    def __enter__(self) -> WriteAhead:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:  # fmt: skip
        if exc_type is None:
            self.close()
        else:
            self.abort()
