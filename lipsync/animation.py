"""Animated pictures that ffmpeg cannot decode (an animated WebP: Debian 12's ffmpeg 5.1 finds no picture in it),
decoded by Pillow: when each frame starts, and the frames at a constant rate, as ffmpeg's fps filter gives a video's.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

from PIL import Image

from lipsync.errors import LipSyncError
from lipsync.picture import DECODE_FAILURES, open_picture, to_bgr
from lipsync.types import Frame

ANIMATED_FORMATS = ("WEBP",)  # Pillow formats whose animations go through Pillow (ffmpeg reads GIF, APNG, AVIF)
MS_PER_SECOND = 1000.0
DESCRIBED_FILES = 16  # animations whose frame times are remembered (a tuple of floats each)
UNTIMED_FRAME_MS = 100  # how long a frame stating no duration (0 ms) shows: what browsers do for GIFs
# An animated WebP's RIFF layout (Google's container specification): a 12-byte header, then chunks of a FourCC, a
# little-endian 32-bit size and that many bytes (padded to even). Each frame is an ANMF chunk whose payload starts
# with its offset, size and duration: the duration, in ms, is 24 bits at bytes 12-14
RIFF_HEADER = struct.Struct("<4sI4s")
CHUNK_HEADER = struct.Struct("<4sI")
FRAME_CHUNK = b"ANMF"
FRAME_DURATION_AT = 12
FRAME_HEADER_BYTES = 16


@dataclass(frozen=True)
class Animation:
    """What a probe needs of an animation: its canvas size and when its frames show."""

    width: int
    height: int
    starts: tuple[float, ...]  # the second each frame starts at, and the last frame's end

    @property
    def frames(self) -> int:
        return len(self.starts) - 1

    @property
    def seconds(self) -> float:
        return self.starts[-1]


def describe(path: str | Path) -> Animation | None:
    """The size and frame times of an animation of two or more frames; None when the file is no such animation
    (a still WebP, or not a WebP). Read from the file's frame headers, decoding nothing (a 150-frame 720p WebP:
    2.3 s less than decoding every frame, which is where Pillow reads a frame's duration); once per file version,
    as the app probes one face for its limits, its face picker and its run. LipSyncError when the file ends inside
    a frame."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return _described(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=DESCRIBED_FILES)
def _described(path: str, mtime_ns: int, size: int) -> Animation | None:
    """describe() of one version of a file (its modification time and size are part of the key)."""
    image = _open(path)
    if image is None:
        return None
    with image:
        if not getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) < 2:
            return None
        durations = _stated_durations(path, image.n_frames)
        if durations is None:  # frame headers not as the specification lays them out: Pillow decodes each frame
            durations = [_duration(image, index, Path(path).name) for index in range(image.n_frames)]
        width, height = image.size
    if not any(durations):
        durations = [UNTIMED_FRAME_MS] * len(durations)
    ends = itertools.accumulate(durations)
    return Animation(width, height, (0.0, *(ms / MS_PER_SECOND for ms in ends)))


def shown_at(starts: Sequence[float], index: int, fps: float) -> int:
    """The animation frame that output frame `index` at `fps` shows: the last one starting before the middle of its
    slot, which is how ffmpeg's fps filter (rounding to the nearest slot) holds and drops a video's frames."""
    return max(bisect.bisect_left(starts, (index + 0.5) / fps, hi=len(starts) - 1) - 1, 0)


class AnimationFrames:
    """`count` BGR uint8 frames of an animation at a constant `fps` (each of its frames held or dropped as its
    start times say), decoded by Pillow one at a time; close() closes the file (idempotent)."""

    def __init__(self, path: str | Path, starts: Sequence[float], fps: float, count: int) -> None:
        self.path, self.starts, self.fps, self.count = Path(path), starts, fps, count
        self.made = 0
        self._image: Image.Image | None = None
        self._shown: tuple[int, Frame] | None = None

    def next_frame(self) -> Frame | None:
        """The next output frame (a fresh array), or None after the last."""
        if self.made >= self.count:
            self.close()
            return None
        index = shown_at(self.starts, self.made, self.fps)
        if self._shown is None or self._shown[0] != index:
            self._shown = index, self._decode(index)
        self.made += 1
        return self._shown[1].copy()

    def _decode(self, index: int) -> Frame:
        if self._image is None:
            self._image = _open(self.path)
            if self._image is None:
                raise LipSyncError(f"could not decode the animation {self.path.name}; did the file change?")
        _load(self._image, index, self.path.name)
        return to_bgr(self._image)

    def close(self) -> None:
        if self._image is not None:
            image, self._image = self._image, None
            image.close()
        self._shown = None


def _open(path: str | Path) -> Image.Image | None:
    return open_picture(path, ANIMATED_FORMATS, Path(path).name)


def _load(image: Image.Image, index: int, name: str) -> None:
    """Decode frame `index`; LipSyncError when it is damaged."""
    try:
        image.seek(index)
        image.load()
    except DECODE_FAILURES as error:
        raise LipSyncError(f"could not decode frame {index + 1} of the animation {name} ({error}); "
                           "is the file complete?") from None


def _stated_durations(path: str, frames: int) -> list[int] | None:
    """Each frame's milliseconds as its ANMF chunk states them, reading chunk headers only; None when the file
    does not hold `frames` such chunks in the specification's layout; LipSyncError when it ends inside one."""
    with open(path, "rb") as handle:
        header = handle.read(RIFF_HEADER.size)
        if len(header) < RIFF_HEADER.size:
            return None
        riff, size, webp = RIFF_HEADER.unpack(header)
        if (riff, webp) != (b"RIFF", b"WEBP"):
            return None
        ends = (CHUNK_HEADER.size + size, handle.seek(0, 2))  # the RIFF's stated end, and the file's
        handle.seek(RIFF_HEADER.size)
        durations: list[int] = []
        try:
            while (chunk := _next_chunk(handle, ends, len(durations), Path(path).name)) is not None:
                if chunk[0] == FRAME_CHUNK:
                    durations.append(int.from_bytes(chunk[1][FRAME_DURATION_AT:FRAME_DURATION_AT + 3], "little"))
        except ValueError:
            return None
    return durations if len(durations) == frames else None


def _next_chunk(handle: BinaryIO, ends: tuple[int, int], frames_read: int, name: str) -> tuple[bytes, bytes] | None:
    """The next chunk's FourCC and the first FRAME_HEADER_BYTES of its payload, the file positioned after it;
    None after the last. LipSyncError when the file ends inside it; ValueError when it runs past the RIFF's end."""
    stated_end, file_end = ends
    start = handle.tell()
    if start >= min(stated_end, file_end):
        return None
    header = handle.read(CHUNK_HEADER.size)
    kind, size = CHUNK_HEADER.unpack(header) if len(header) == CHUNK_HEADER.size else (b"", file_end)
    payload_end = start + CHUNK_HEADER.size + size
    if payload_end > file_end:
        raise LipSyncError(f"could not decode frame {frames_read + 1} of the animation {name} (the file ends inside "
                           "it); is the file complete?")
    if payload_end > stated_end:
        raise ValueError("a chunk runs past the RIFF's stated end")
    payload = handle.read(min(size, FRAME_HEADER_BYTES))
    handle.seek(payload_end + size % 2)
    return kind, payload


def _duration(image: Image.Image, index: int, name: str) -> int:
    """Milliseconds frame `index` shows (decoding it, which is when Pillow reads its duration)."""
    _load(image, index, name)
    return max(round(image.info.get("duration") or 0), 0)
