"""What one run works from: the facts gathered before any frame is touched, and the face input's frames."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

from . import picker, video
from .options import MAX_FPS, LipSyncOptions
from .segments import SegmentSink
from .types import Frame

# A video slower than this (an animated GIF at 10 frames/s, a slideshow, a timelapse) runs at --fps instead, each of
# its frames held as long as it lasts, so that the mouth still moves at a speaking pace; Wav2Lip learned at 25.
# Videos at 23.976 frames/s and faster run at their own rate, as the reference runs every video
MIN_VIDEO_FPS = 20.0
# A video faster than this (a phone's 120 or 240 frames/s slow motion, a 144 Hz screen recording) runs at a whole
# fraction of its rate, one frame in n, so that its motion stays even: 120 → 60, 100 → 50, 240 → 60. The mouth needs
# no more, few screens show more, and each frame costs the generator as much (120 frames/s was 4.8x a 25's work)
MAX_VIDEO_FPS = MAX_FPS
RATE_SLACK = 1.01  # a variable-rate video averaging 60.3 frames/s is a 60 frames/s video: it keeps every frame


@dataclass(frozen=True)
class Job:
    """The facts one run works from, gathered before any frame is touched."""

    face: Path
    audio: Path
    outfile: Path
    info: video.MediaInfo
    mel: np.ndarray
    fps: float
    frames: int  # output frames = mel windows
    still: bool  # one source frame for every output frame
    seconds: float  # of decoded speech: the output's length
    size: Tuple[int, int]  # width, height of the frames worked on (after resize, rotation, crop and fit)
    notes: Tuple[str, ...]
    segments: Optional[SegmentSink] = None  # where finished pieces of the output go while it is encoded
    still_frame: Optional[Frame] = None  # a still's one frame, decoded while the networks load
    sound: Optional[video.MediaInfo] = None  # the audio file's streams, for the encoder (probed while they load)
    pixel_aspect: Fraction = Fraction(1)  # how much wider than tall the frames' pixels are shown (an anamorphic video)


def run_rate(info: video.MediaInfo, options: LipSyncOptions) -> float:
    """Output frames per second: --fps for a picture, a video's own rate, for a video slower than MIN_VIDEO_FPS
    whichever is higher of its rate and --fps (a --fps at or below it keeps a slow video's own rate), and for one
    faster than MAX_VIDEO_FPS the largest whole fraction of its rate within it."""
    if info.is_image:
        return options.fps
    if info.fps < MIN_VIDEO_FPS:
        return max(info.fps, options.fps)
    return info.fps / math.ceil(info.fps / (MAX_VIDEO_FPS * RATE_SLACK))


def read_at(info: video.MediaInfo, fps: float) -> video.MediaInfo:
    """The video as read at `fps` (its frames held or dropped by ffmpeg's fps filter): its rate and frame count."""
    if info.is_image or fps == info.fps:
        return info
    frames = math.ceil(info.duration * fps) if info.duration > 0 else math.ceil(info.frame_count * fps / info.fps)
    return replace(info, fps=fps, frame_count=max(frames, 1))


def source_frames(job: Job, options: LipSyncOptions) -> Iterator[Frame]:
    """The face input's frames after the seed's resize/rotate/crop edits (one for a still)."""
    if job.still_frame is not None:
        return _once(job.still_frame)
    return picker.source_frames(job.face, job.info, options, job.still)


def _once(frame: Frame) -> Iterator[Frame]:
    yield frame
