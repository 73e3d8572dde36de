"""Face boxes per frame: detectors (S3FD, OpenCV Haar), downscaled batched detection, gaps, pads, smoothing."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .errors import LipSyncError
from .types import Box, Frame

SMOOTH_WINDOW = 5  # boxes averaged per frame, as the reference does
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_STEP = 1.1
HAAR_MIN_NEIGHBOURS = 5
HAAR_MIN_FACE = 24  # px on the detection copy
# Haar boxes run from the brows to the lower lip; S3FD's (what Wav2Lip was trained on) reach the chin.
HAAR_TO_S3FD = (0.0, 0.08, 0.0, 0.18)  # grow (left, top, right, bottom) by these fractions of the box size
KEYFRAME_DRIFT = 0.08  # keyframe boxes further apart than this fraction of the face size: detect the frames between

Detections = List[Optional[Box]]
DetectFn = Callable[[Sequence[Frame]], Detections]


def detection_scale(shape: Tuple[int, ...], max_side: int) -> float:
    """Factor (≤ 1) that brings a frame's longest side down to max_side; 0 means no downscaling."""
    longest = max(shape[0], shape[1])
    if max_side <= 0 or longest <= max_side:
        return 1.0
    return max_side / longest


def downscale(frames: Sequence[Frame], scale: float) -> List[Frame]:
    """Resized copies for detection (area filter keeps small faces visible)."""
    if scale == 1.0:
        return list(frames)
    h, w = frames[0].shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]


def map_back(box: Optional[Box], scale: float, shape: Tuple[int, ...]) -> Optional[Box]:
    """A box found on a downscaled copy, in full-frame pixels, clipped to the frame."""
    if box is None:
        return None
    h, w = shape[:2]
    x1, y1, x2, y2 = (int(round(v / scale)) for v in box)
    return (max(0, x1), max(0, y1), min(w, x2), min(h, y2))


class S3FDDetector:
    """S3FD through a predictor: the highest-scoring face per frame (boxes in the given frames' pixels)."""

    def __init__(self, run: Callable[[np.ndarray], List[np.ndarray]]):
        self._run = run

    def __call__(self, frames: Sequence[Frame]) -> Detections:
        from . import s3fd

        found = s3fd.decode(self._run(s3fd.preprocess(frames)))
        return [_best(dets) for dets in found]


def _best(dets: np.ndarray) -> Optional[Box]:
    if len(dets) == 0:
        return None
    x1, y1, x2, y2 = (int(v) for v in np.maximum(dets[0, :4], 0))
    return (x1, y1, x2, y2)


class HaarDetector:
    """OpenCV's Haar cascade (ships with opencv): no download; the largest face, box stretched to the chin."""

    def __init__(self) -> None:
        path = Path(cv2.data.haarcascades) / HAAR_CASCADE
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise LipSyncError(f"OpenCV's face cascade is missing ({path}); reinstall opencv-python-headless")
        self._lock = threading.Lock()  # one cascade object is not safe to share between threads

    def __call__(self, frames: Sequence[Frame]) -> Detections:
        with self._lock:
            return [self._detect(f) for f in frames]

    def _detect(self, frame: Frame) -> Optional[Box]:
        grey = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        found = self._cascade.detectMultiScale(
            grey, HAAR_SCALE_STEP, HAAR_MIN_NEIGHBOURS, minSize=(HAAR_MIN_FACE, HAAR_MIN_FACE)
        )
        if len(found) == 0:
            return None
        x, y, w, h = max(found, key=lambda r: r[2] * r[3])
        left, top, right, bottom = HAAR_TO_S3FD
        box = (x - left * w, y - top * h, x + w + right * w, y + h + bottom * h)
        height, width = frame.shape[:2]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        return (max(0, x1), max(0, y1), min(width, x2), min(height, y2))


def detect_sparse(frames: Sequence[Frame], detect: DetectFn, every: int, batch: int) -> Detections:
    """Detect every `every`-th frame (and the last); frames between keyframes whose boxes moved or vanished
    are detected too. Skipped frames are None, for fill_gaps to interpolate."""
    found: Detections = [None] * len(frames)
    keys = sorted(set(range(0, len(frames), max(1, every))) | {len(frames) - 1})
    _detect_into(found, frames, keys, detect, batch)
    between = [i for a, b in zip(keys, keys[1:]) if _moved(found[a], found[b]) for i in range(a + 1, b)]
    _detect_into(found, frames, between, detect, batch)
    return found


def _detect_into(found: Detections, frames: Sequence[Frame], indices: List[int], detect: DetectFn, batch: int) -> None:
    for start in range(0, len(indices), batch):
        chunk = indices[start : start + batch]
        for index, box in zip(chunk, detect([frames[i] for i in chunk])):
            found[index] = box


def _moved(a: Optional[Box], b: Optional[Box]) -> bool:
    """Whether two keyframe boxes differ enough that interpolating between them could miss the face."""
    if a is None or b is None:
        return True
    size = max(a[2] - a[0], a[3] - a[1], 1)
    return max(abs(p - q) for p, q in zip(a, b)) > KEYFRAME_DRIFT * size


def fill_gaps(boxes: Detections, source: str) -> np.ndarray:
    """Frames without a face take a box interpolated between the nearest frames that have one."""
    found = [i for i, b in enumerate(boxes) if b is not None]
    if not found:
        raise LipSyncError(
            f"No face found in any frame of {source} — try a clearer, front-facing picture, "
            "--face_detector haar, or give the face position with --box y1 y2 x1 x2"
        )
    known = np.array([boxes[i] for i in found], dtype=np.float64)
    index = np.arange(len(boxes))
    filled = np.stack([np.interp(index, found, known[:, k]) for k in range(4)], axis=1)
    return np.round(filled).astype(np.int64)


def apply_pads(boxes: np.ndarray, pads: Tuple[int, int, int, int], shape: Tuple[int, ...]) -> np.ndarray:
    """Grow (x1, y1, x2, y2) boxes by pads (top, bottom, left, right), clipped to the frame."""
    top, bottom, left, right = pads
    h, w = shape[:2]
    out = boxes.copy()
    out[:, 0] = np.maximum(0, boxes[:, 0] - left)
    out[:, 1] = np.maximum(0, boxes[:, 1] - top)
    out[:, 2] = np.minimum(w, boxes[:, 2] + right)
    out[:, 3] = np.minimum(h, boxes[:, 3] + bottom)
    return out


def smooth(boxes: np.ndarray, window: int = SMOOTH_WINDOW) -> np.ndarray:
    """The reference's smoothing: each box becomes the mean of the `window` boxes from it on, in place, truncated."""
    out = boxes.astype(np.int64).copy()
    n = len(out)
    if n < window:
        out[:] = out.mean(axis=0).astype(np.int64)
        return out
    for i in range(n):
        span = out[n - window :] if i + window > n else out[i : i + window]
        out[i] = np.mean(span, axis=0)
    return out


def fixed_box(box: Tuple[int, int, int, int], shape: Tuple[int, ...]) -> Box:
    """The user's --box (y1, y2, x1, x2) as an (x1, y1, x2, y2) box inside the frame."""
    y1, y2, x1, x2 = box
    h, w = shape[:2]
    x1, x2, y1, y2 = min(x1, w - 1), min(x2, w), min(y1, h - 1), min(y2, h)
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise LipSyncError(f"--box {' '.join(map(str, box))} lies outside the {w}×{h} frame")
    return (x1, y1, x2, y2)


def valid_box(box: Sequence[int]) -> bool:
    """Whether a box has room for a face crop."""
    return box[2] - box[0] >= 2 and box[3] - box[1] >= 2
