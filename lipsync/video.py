"""Frames in: stream a face input's frames through ffmpeg and edit them (lipsync.encoding encodes them back out)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from lipsync import ffmpeg
from lipsync.animation import AnimationFrames
from lipsync.errors import LipSyncError
from lipsync.ffmpeg import file_arg, probe_args, rate_arg
from lipsync.ffmpeg import require as require_ffmpeg
from lipsync.framecache import FrameCache, pingpong_index
from lipsync.mediainfo import MediaInfo, probe
from lipsync.picture import read_image
from lipsync.types import Frame

__all__ = ["MAX_FRAME_PIXELS", "FrameCache", "FrameReader", "MediaInfo", "can_tone_map", "file_arg", "fit",
           "fitted_size", "pingpong_index", "probe", "probe_args", "rate_arg", "read_args", "read_frames", "read_image",
           "require_ffmpeg", "tone_maps", "transform", "transformed_size"]

MAX_FRAME_SIDE = 4096  # px; larger pictures and videos are scaled down to fit …
MAX_FRAME_PIXELS = 3840 * 2160  # … and to at most 4K UHD's area: H.264 level 5.1, what hardware decoders accept
NO_CROP = (0, -1, 0, -1)  # y1, y2, x1, x2; -1 is that edge of the frame
# HDR video (a phone's HLG, HDR10's PQ) to the SDR BT.709 frames lipsync works on and writes: linear light with ITU-R
# BT.2408's reference white (203 cd/m²) as SDR's white, BT.2020's colours into BT.709's, highlights above 0.6 of
# white rolled off (mobius) rather than clipped, then BT.709's curve. Without it the frames come out dark and grey.
HDR_TO_SDR = ("zscale=transfer=linear:primaries=bt709:npl=203,format=gbrpf32le,"
              "tonemap=tonemap=mobius:param=0.6:desat=0,zscale=transfer=bt709,format=gbrp")
TONE_MAP_FILTERS = ("zscale", "tonemap")
# Interlaced video (a camcorder's 1080i, broadcast, DV) to whole frames at its frame rate: bwdif weaves each frame's two
# fields where nothing moved and fills in from one field where something did; frames flagged progressive pass as they
# are. Without it every moving edge came out combed (alternate rows a field apart), in a result players show as
# progressive: a panning clip's rows differed by 23 levels on average, 5.7 after it (5.6 in a still frame)
DEINTERLACE = "bwdif=mode=send_frame:parity=auto:deint=interlaced"


# ---------------------------------------------------------------- reading frames


def can_tone_map() -> bool:
    """Whether this ffmpeg has the filters HDR_TO_SDR needs (zscale needs libzimg)."""
    return ffmpeg.has_filters(*TONE_MAP_FILTERS)


def tone_maps(info: MediaInfo) -> bool:
    """Whether this video's frames are read tone-mapped: it is HDR, and this ffmpeg has the filters for it."""
    return bool(info.hdr) and can_tone_map()


def read_args(path: str | Path, fps: float, hdr: bool = False, interlaced: bool = False) -> list[str]:
    """ffmpeg command streaming the first video stream as raw BGR frames at a constant `fps` to stdout.

    ffmpeg applies rotation metadata itself; the fps filter turns variable-rate input into frames
    at exactly i/fps (duplicating or dropping as timestamps demand) and leaves constant-rate input alone.
    An interlaced video is deinterlaced first (DEINTERLACE), an HDR video tone-mapped to SDR (HDR_TO_SDR).
    """
    filters = [*([DEINTERLACE] if interlaced else []), *([HDR_TO_SDR] if hdr else []), f"fps={rate_arg(fps)}"]
    return [*ffmpeg.head(), "-i", file_arg(path), "-map", "0:v:0", "-vf", ",".join(filters),
            "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]


def _read_exactly(stream: IO[bytes], buffer: memoryview) -> int:
    """Fill `buffer` from `stream`; returns bytes read (less than its size only at end of stream)."""
    filled = 0
    while filled < len(buffer):
        count = stream.readinto(buffer[filled:])  # type: ignore[attr-defined]
        if not count:
            break
        filled += count
    return filled


class FrameReader:
    """BGR uint8 frames (info.width x info.height) of a face input: the picture once, or every video frame
    at info.fps, streamed through one ffmpeg process that starts at the first next().

    An iterator and a context manager: close() (or leaving `with read_frames(…) as frames:`, or
    `contextlib.closing`) kills and reaps ffmpeg and closes its pipes and stderr file at once, whether the
    consumer read to the end, stopped early or raised. Reading to the end closes it too; so does an error.
    """

    def __init__(self, path: str | Path, info: MediaInfo) -> None:
        self.path, self.info = Path(path), info
        self.frames_read = 0
        self._process: ffmpeg.Process | None = None
        self._animation: AnimationFrames | None = None
        self._closed = False

    def __iter__(self) -> FrameReader:
        return self

    def __next__(self) -> Frame:
        if self._closed or (self.info.is_image and self.frames_read):
            self.close()
            raise StopIteration
        try:
            frame = self._next_frame()
        except BaseException:
            self.close()
            raise
        if frame is None:
            self.close()
            raise StopIteration
        self.frames_read += 1
        return frame

    def _next_frame(self) -> Frame | None:
        if self.info.is_image:
            return self._picture()
        if self.info.frame_starts is not None:
            return self._next_animation_frame()
        return self._next_video_frame()

    def _picture(self) -> Frame:
        """The picture's one frame: as the probe decoded it when its description holds it, else decoded now."""
        return self.info.picture if self.info.picture is not None else read_image(self.path)

    def _next_video_frame(self) -> Frame | None:
        """The next frame from ffmpeg (started on first use); None after the last, once ffmpeg exited well."""
        if self._process is None:
            args = read_args(self.path, self.info.fps, tone_maps(self.info), self.info.interlaced)
            self._process = ffmpeg.Process(args, stdout=True)
        assert self._process.stdout is not None
        frame = np.empty((self.info.height, self.info.width, 3), dtype=np.uint8)
        got = _read_exactly(self._process.stdout, memoryview(frame).cast("B"))
        if got == frame.nbytes:
            return frame
        if got:
            raise LipSyncError(f"{self.path}: ffmpeg's frames are not {self.info.width}x{self.info.height} "
                               "as probed")
        if self._process.finish() != 0 or self.frames_read == 0:
            raise LipSyncError(f"could not decode the video {self.path.name} "
                               f"(ffmpeg: {self._process.said(self.path)})")
        return None

    def _next_animation_frame(self) -> Frame | None:
        """The next frame of an animation Pillow decodes (opened on first use); None after the last."""
        if self._animation is None:
            assert self.info.frame_starts is not None
            self._animation = AnimationFrames(self.path, self.info.frame_starts, self.info.fps, self.info.frame_count)
        return self._animation.next_frame()

    def close(self) -> None:
        """Stop ffmpeg (kill if running, reap) and close its pipes and stderr file (or the animation's file);
        idempotent."""
        self._closed = True
        if self._animation is not None:
            self._animation.close()
        if self._process is not None:
            process, self._process = self._process, None
            process.stop()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_frames(path: str | Path, info: MediaInfo) -> FrameReader:
    """The frames of a picture (once) or video (at info.fps) as a FrameReader; close it, or use it in a
    `with` block, to stop ffmpeg early. Nothing is held beyond the current frame."""
    return FrameReader(path, info)


# ---------------------------------------------------------------- per-frame edits


def _resized_size(width: int, height: int, resize_factor: int) -> tuple[int, int]:
    """width x height divided by resize_factor as the reference does (rounding down); LipSyncError at 0 px."""
    if resize_factor <= 1:
        return width, height
    if width // resize_factor < 1 or height // resize_factor < 1:
        raise LipSyncError(f"--resize_factor {resize_factor} shrinks the {width}×{height} frame to nothing; "
                           f"{min(width, height)} is the largest factor that works for it")
    return width // resize_factor, height // resize_factor


def _crop_box(width: int, height: int, crop: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """(y1, y2, x1, x2) of `crop` in a width x height frame: -1 ends mean the frame's edge, negative
    starts its first row/column; LipSyncError when the box reaches past the frame or is empty."""
    y1, y2, x1, x2 = crop
    y1, x1 = max(y1, 0), max(x1, 0)
    y2 = height if y2 == -1 else y2
    x2 = width if x2 == -1 else x2
    if y2 > height or x2 > width:
        raise LipSyncError(f"--crop {crop} reaches past the {width}×{height} frame (the size after "
                           "--resize_factor and --rotate); -1 means up to the edge")
    if y1 >= y2 or x1 >= x2:
        raise LipSyncError(f"--crop {crop} leaves nothing of the {width}×{height} frame")
    return y1, y2, x1, x2


def transformed_size(width: int, height: int, resize_factor: int = 1, rotate: bool = False,
                     crop: tuple[int, int, int, int] = NO_CROP) -> tuple[int, int]:
    """(width, height) of what `transform` makes of a width x height frame, without any frame; raises the
    same LipSyncErrors, so a job's geometry can be checked before anything is decoded."""
    width, height = _resized_size(width, height, resize_factor)
    if rotate:
        width, height = height, width
    y1, y2, x1, x2 = _crop_box(width, height, crop)
    return x2 - x1, y2 - y1


def transform(frame: Frame, resize_factor: int = 1, rotate: bool = False,
              crop: tuple[int, int, int, int] = NO_CROP) -> Frame:
    """The reference's per-frame edits, in its order: shrink by resize_factor, turn 90° clockwise, crop.

    crop is (y1, y2, x1, x2) in pixels of the resized, rotated frame; -1 means that edge of the frame.
    """
    height, width = frame.shape[:2]
    size = _resized_size(width, height, resize_factor)
    if size != (width, height):
        frame = cv2.resize(frame, size)
    if rotate:
        frame = cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
    height, width = frame.shape[:2]
    y1, y2, x1, x2 = _crop_box(width, height, crop)
    if (y1, y2, x1, x2) != (0, height, 0, width):
        frame = np.ascontiguousarray(frame[y1:y2, x1:x2])
    return frame


def fitted_size(width: int, height: int) -> tuple[int, int]:
    """The size a width x height frame is scaled down to (if at all) to stay within MAX_FRAME_SIDE/PIXELS."""
    scale = min(1.0, MAX_FRAME_SIDE / max(width, height, 1), math.sqrt(MAX_FRAME_PIXELS / max(width * height, 1)))
    if scale >= 1.0:
        return width, height
    return max(1, int(width * scale)), max(1, int(height * scale))


def fit(frame: Frame) -> Frame:
    """The frame, scaled down (area filter) if it is larger than video players decode."""
    height, width = frame.shape[:2]
    size = fitted_size(width, height)
    if size == (width, height):
        return frame
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
