"""Face detectors: S3FD (through a predictor) and OpenCV's Haar cascade. Each gives every face of a frame
(`faces`, box and score, the most confident first) or only the most confident one (calling it)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .errors import LipSyncError
from .types import Box, Frame

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_STEP = 1.1
HAAR_MIN_NEIGHBOURS = 5
HAAR_MIN_FACE = 24  # px on the detection copy
# Haar boxes run from the brows to the lower lip; S3FD's (what Wav2Lip was trained on) reach the chin.
HAAR_TO_S3FD = (0.0, 0.08, 0.0, 0.18)  # grow (left, top, right, bottom) by these fractions of the box size
# A face beside the most confident one needs this many overlapping cascade hits: on the astronaut photo real
# faces get 10 (at 32 px) to 45, the false hits on her suit 6.
HAAR_MIN_VOTES_BESIDE = 8

Scored = Tuple[Box, float]  # a face box and the detector's confidence in it
Detections = List[Optional[Box]]
Candidates = List[List[Scored]]  # per frame, every face found, the most confident first
DetectFn = Callable[[Sequence[Frame]], Detections]
CandidatesFn = Callable[[Sequence[Frame]], Candidates]


def candidates_of(detect: DetectFn) -> CandidatesFn:
    """Every face a detector finds per frame: its `faces` method, or (a detector of one face) its one box."""
    many = getattr(detect, "faces", None)
    if many is not None:
        return many
    return lambda frames: [[] if box is None else [(box, 1.0)] for box in detect(frames)]


class S3FDDetector:
    """S3FD through a predictor (boxes in the given frames' pixels)."""

    def __init__(self, run: Callable[[np.ndarray], List[np.ndarray]]):
        self._run = run

    def __call__(self, frames: Sequence[Frame]) -> Detections:
        """The highest-scoring face per frame."""
        return [found[0][0] if found else None for found in self.faces(frames)]

    def faces(self, frames: Sequence[Frame]) -> Candidates:
        from . import s3fd

        found = s3fd.decode(self._run(s3fd.preprocess(frames)))
        return [[(_corners(row), float(row[4])) for row in dets] for dets in found]


def _corners(row: np.ndarray) -> Box:
    x1, y1, x2, y2 = (int(v) for v in np.maximum(row[:4], 0))
    return (x1, y1, x2, y2)


class HaarDetector:
    """OpenCV's Haar cascade (ships with opencv): no download; boxes stretched to the chin, the score is the
    number of overlapping cascade hits (false positives get few)."""

    def __init__(self) -> None:
        path = Path(cv2.data.haarcascades) / HAAR_CASCADE
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise LipSyncError(f"OpenCV's face cascade is missing ({path}); reinstall opencv-python-headless")
        self._lock = threading.Lock()  # one cascade object is not safe to share between threads

    def __call__(self, frames: Sequence[Frame]) -> Detections:
        """The most confident face per frame (most overlapping hits, the larger on a tie)."""
        return [found[0][0] if found else None for found in self.faces(frames)]

    def faces(self, frames: Sequence[Frame]) -> Candidates:
        with self._lock:
            return [self._detect(f) for f in frames]

    def _detect(self, frame: Frame) -> List[Scored]:
        grey = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        found, votes = self._cascade.detectMultiScale2(
            grey, HAAR_SCALE_STEP, HAAR_MIN_NEIGHBOURS, minSize=(HAAR_MIN_FACE, HAAR_MIN_FACE)
        )
        hits = sorted(zip(found, votes), key=lambda hit: (hit[1], hit[0][2] * hit[0][3]), reverse=True)
        kept = hits[:1] + [hit for hit in hits[1:] if hit[1] >= HAAR_MIN_VOTES_BESIDE]
        return [(_to_chin(box, frame.shape), float(count)) for box, count in kept]


def _to_chin(box: np.ndarray, shape: Tuple[int, ...]) -> Box:
    """A Haar box (x, y, w, h) grown to S3FD's extent, as (x1, y1, x2, y2) clipped to the frame."""
    x, y, w, h = box
    left, top, right, bottom = HAAR_TO_S3FD
    grown = (x - left * w, y - top * h, x + w + right * w, y + h + bottom * h)
    height, width = shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in grown)
    return (max(0, x1), max(0, y1), min(width, x2), min(height, y2))
