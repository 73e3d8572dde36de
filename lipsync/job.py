"""What one run works from: the facts gathered before any frame is touched, and the face input's frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

from . import picker, video
from .options import LipSyncOptions
from .segments import SegmentSink
from .types import Frame


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


def source_frames(job: Job, options: LipSyncOptions) -> Iterator[Frame]:
    """The face input's frames after the seed's resize/rotate/crop edits (one for a still)."""
    if job.still_frame is not None:
        return _once(job.still_frame)
    return picker.source_frames(job.face, job.info, options, job.still)


def _once(frame: Frame) -> Iterator[Frame]:
    yield frame
