"""Frames kept on disk and read back in any order: a looping output replays a video forward and back."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO

import numpy as np

from lipsync.errors import LipSyncError
from lipsync.types import Frame


def pingpong_index(i: int, n: int) -> int:
    """Frame shown at step i when n frames play forward, then backward, and so on: 0..n-1, n-2..1, 0, 1, ..."""
    if n <= 0:
        raise ValueError(f"pingpong_index needs at least one frame, got n={n}")
    if n == 1:
        return 0
    period = 2 * n - 2
    step = i % period
    return step if step < n else period - step


class FrameCache:
    """Frames kept on disk (raw, in the run's temp dir) and read back by index, so RAM stays bounded.

    Pass 1 appends every frame; pass 2 reads frames in any order (ping-pong playback). Reads use pread,
    not a memory map, so cached frames never count towards the process's resident memory.
    Disk use is frames x height x width x 3 bytes.
    """

    def __init__(self, temp_dir: str | Path) -> None:
        handle, name = tempfile.mkstemp(prefix="frames-", suffix=".raw", dir=temp_dir)
        self.path = Path(name)
        self._file: IO[bytes] | None = os.fdopen(handle, "wb")
        self._shape: tuple[int, ...] | None = None
        self._count = 0
        self._flushed = True

    def append(self, frame: Frame) -> None:
        """Store the next frame; all frames must share one shape."""
        if self._file is None:
            raise ValueError("FrameCache is closed")
        if self._shape is None:
            self._shape = frame.shape
        if frame.shape != self._shape or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not match cached {self._shape} uint8")
        try:
            self._file.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
            self._flushed = False
        except OSError as error:
            raise LipSyncError(f"could not cache frames in {self.path.parent} ({error.strerror}); "
                               "free disk space or point TMPDIR at a larger disk") from error
        self._count += 1

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._count * int(np.prod(self._shape or (0,)))

    def __getitem__(self, index: int) -> Frame:
        """A writable copy of frame `index` (negative counts from the end), read with pread so RSS stays flat."""
        if not -self._count <= index < self._count:
            raise IndexError(f"frame {index} of {self._count}")
        assert self._file is not None and self._shape is not None
        if not self._flushed:
            self._file.flush()
            self._flushed = True
        size = int(np.prod(self._shape))
        data = os.pread(self._file.fileno(), size, (index % self._count) * size)
        return np.frombuffer(bytearray(data), np.uint8).reshape(self._shape)

    def close(self) -> None:
        """Delete the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FrameCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
