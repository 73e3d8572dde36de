"""Who can speak: the faces of a picture or video numbered left to right as face_index counts them (in the first
frame with faces, as a run finds them), each with a small picture for a front end to show; and the frames a run
works on, read from the face file."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

from . import faces, geometry, paths, video
from .errors import LipSyncError
from .follow import FirstFaces
from .options import LipSyncOptions
from .types import Frame

if TYPE_CHECKING:
    from .engine import Engine

SCAN_FRAMES = 250  # frames of a video looked through for the first with faces (10 s at 25 fps)
THUMB_SIDE = 96  # px: the side of each face's picture
THUMB_MARGIN = 0.2  # of the face's size, shown around its box
CLEAR_FRAME_STD = 8.0  # grey levels: a frame less varied than this (black, a fade's first frames) shows no face
FADE_STEP = 0.02  # a frame whose contrast differs from the next one's by more than this share is still fading in

PathLike = Union[str, Path]


@dataclass(frozen=True)
class FoundFace:
    """One face a run can be asked to follow with face_index=index."""

    index: int  # from 0 at the left, by the box's centre
    # y1, y2, x1, x2 (as --box takes it) in the frames a run works on (after resize, rotation, crop)
    box: Tuple[int, int, int, int]
    score: float  # the detector's confidence
    frame: int  # the frame it was found in: the first with faces
    thumbnail: np.ndarray  # THUMB_SIDE² RGB uint8


def source_frames(path: Path, info: video.MediaInfo, options: LipSyncOptions, still: bool) -> Iterator[Frame]:
    """The face input's frames after the seed's resize/rotate/crop edits and the fit to playable sizes (one for
    a still)."""
    with contextlib.closing(video.read_frames(path, info)) as stream:
        for frame in stream:
            yield video.fit(video.transform(frame, options.resize_factor, options.rotate, options.crop))
            if still:
                return


def _checked(face: PathLike, options: LipSyncOptions) -> Tuple[Path, video.MediaInfo]:
    """The face file and its description, checked as a run checks them (a LipSyncError says what is wrong)."""
    video.require_ffmpeg()
    path = paths.check_input(face, "face")
    info = video.probe(path)
    geometry.check_source(info)
    geometry.frame_size(info, options)
    return path, info


def find_faces(face: PathLike, options: Optional[LipSyncOptions] = None,
               engine: Optional["Engine"] = None) -> List[FoundFace]:  # fmt: skip
    """The faces a run with these options numbers for face_index, left to right; [] when the picture (or the
    video's first SCAN_FRAMES frames) has none. Loads the face detector (once per engine)."""
    from . import runtime
    from .engine import DEFAULT_ENGINE, detection_batch, run_detector
    from .job import read_at, run_rate  # (job reads frames through this module)

    options = replace(options or LipSyncOptions(), box=None, face_index=None)
    path, info = _checked(face, options)
    still = info.is_image or options.static
    info = read_at(info, run_rate(info, options))  # frames numbered as a run numbers them (a GIF's held, 120 → 60)
    device = runtime.choose_device(options.device, announce=False)
    detect, _ = run_detector(engine or DEFAULT_ENGINE, options, device, still)
    assert detect is not None  # no box: a detector
    tracker = faces.FaceTracker(detect, 1 if still else options.detect_every, options.detect_max_side,
                                detection_batch(options, device), retry_larger=still, face_index=0)  # fmt: skip
    recent: Dict[int, Frame] = {}  # the frames since the last keyframe: the first with faces may be among them
    with contextlib.closing(source_frames(path, info, options, still)) as frames:
        for index, frame in enumerate(frames):
            if index >= SCAN_FRAMES:
                break
            recent = {i: f for i, f in recent.items() if i > index - options.detect_every - 1} | {index: frame}
            tracker.push(frame)
            if tracker.first_faces is not None:
                aspect = float(geometry.pixel_aspect(info, options))
                return _numbered(tracker.first_faces, recent[tracker.first_faces.frame], aspect)
    return []


def first_frame(face: PathLike, options: Optional[LipSyncOptions] = None) -> Tuple[Frame, float]:
    """The face input's first frame past a fade from black (as varied as the next, within its first SCAN_FRAMES; else
    the first with something in it, else the first) as a run works on it (BGR, after the resize factor, rotation, crop
    and the fit to playable sizes: a --box is in its pixels), and how much wider than tall its pixels are shown."""
    options = options or LipSyncOptions()
    path, info = _checked(face, options)
    aspect = float(geometry.pixel_aspect(info, options))
    first: Optional[Frame] = None
    clear: Optional[Frame] = None  # the first frame with something in it
    before: Optional[Tuple[Frame, float]] = None  # the last frame and its contrast
    with contextlib.closing(source_frames(path, info, options, info.is_image or options.static)) as frames:
        for index, frame in enumerate(frames):
            if index >= SCAN_FRAMES:
                break
            contrast = _contrast(frame)
            if before is not None and _faded_in(before[1], contrast):
                return before[0], aspect
            first = frame if first is None else first
            clear = frame if clear is None and contrast >= CLEAR_FRAME_STD else clear
            before = (frame, contrast)
    if first is None:
        raise LipSyncError(f"no frame could be decoded from the face {path.name}")
    return (first if clear is None else clear), aspect


def _faded_in(contrast: float, next_contrast: float) -> bool:
    """Whether a frame of this contrast shows something and is past a fade: the next one looks as varied."""
    return contrast >= CLEAR_FRAME_STD and abs(next_contrast - contrast) <= FADE_STEP * contrast


def _contrast(frame: Frame) -> float:
    """The standard deviation of the frame's grey levels: near 0 for a black or single-colour frame."""
    return float(cv2.meanStdDev(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))[1][0, 0])


def as_shown(frame: Frame, pixel_aspect: float) -> np.ndarray:
    """A frame as a player shows it, in RGB: an anamorphic video's pixels (`pixel_aspect` times wider than tall when
    shown) stretched across."""
    height, width = frame.shape[:2]
    if pixel_aspect != 1:
        frame = cv2.resize(frame, (max(1, round(width * pixel_aspect)), height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(frame[..., ::-1])


def _numbered(first: FirstFaces, frame: Frame, pixel_aspect: float) -> List[FoundFace]:
    found = []
    for index, ((x1, y1, x2, y2), score) in enumerate(first.faces):
        picture = thumbnail(frame, (x1, y1, x2, y2), pixel_aspect)
        found.append(FoundFace(index, (y1, y2, x1, x2), score, first.frame, picture))
    return found


def thumbnail(frame: Frame, box: tuple, pixel_aspect: float = 1.0) -> np.ndarray:
    """The face with a margin, THUMB_SIDE² RGB (black where the margin runs past the frame), square as shown: an
    anamorphic video's pixels (`pixel_aspect` times wider than tall when shown) are stretched as a player would."""
    x1, y1, x2, y2 = box
    high = int(max((x2 - x1) * pixel_aspect, y2 - y1) * (1 + 2 * THUMB_MARGIN))  # the square's side, in rows
    wide = max(1, int(high / pixel_aspect))
    left, top, pad = (x1 + x2 - wide) // 2, (y1 + y2 - high) // 2, max(high, wide)
    padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    square = padded[top + pad : top + pad + high, left + pad : left + pad + wide]
    return np.ascontiguousarray(cv2.resize(square, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA)[..., ::-1])
