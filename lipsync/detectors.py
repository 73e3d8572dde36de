"""Face detectors: S3FD (through a predictor) and OpenCV's Haar cascade. Each gives every face of a frame
(`faces`, box and score, the most confident first) or only the most confident one (calling it). A detector can
remember what it found in the frames it was given (`Remembering`): a picture run again skips detection."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from . import s3fdboxes
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
FRAMES_REMEMBERED = 256  # detector inputs whose faces a memory keeps (a picture's search makes 2-4 of them)
DIGEST_BYTES = 16  # of a frame's BLAKE2b digest, which identifies it in a memory

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


def most_confident(candidates: Candidates) -> Detections:
    """Each frame's most confident face (its first), or None where none was found."""
    return [found[0][0] if found else None for found in candidates]


class S3FDDetector:
    """S3FD through a predictor (boxes in the given frames' pixels)."""

    def __init__(self, run: Callable[[np.ndarray], List[np.ndarray]]):
        self._run = run

    def __call__(self, frames: Sequence[Frame]) -> Detections:
        """The highest-scoring face per frame."""
        return most_confident(self.faces(frames))

    def faces(self, frames: Sequence[Frame]) -> Candidates:
        found = s3fdboxes.decode(self._run(s3fdboxes.preprocess(frames)))
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
        return most_confident(self.faces(frames))

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


class DetectionMemory:
    """The faces found in each detector input, by its content's digest; the least recently used go first
    beyond `size` (a few hundred bytes each). Thread-safe: one memory serves a process's concurrent runs."""

    def __init__(self, size: int = FRAMES_REMEMBERED):
        self._size = size
        self._found: OrderedDict[bytes, List[Scored]] = OrderedDict()
        self._lock = threading.Lock()

    def recall(self, key: bytes) -> Optional[List[Scored]]:
        with self._lock:
            found = self._found.get(key)
            if found is not None:
                self._found.move_to_end(key)
            return None if found is None else list(found)

    def keep(self, key: bytes, found: List[Scored]) -> None:
        with self._lock:
            self._found[key] = list(found)
            self._found.move_to_end(key)
            while len(self._found) > self._size:
                self._found.popitem(last=False)


class Remembering:
    """A detector that answers from its memory for inputs it has searched before, pixel for pixel: a picture
    run again (the Space's examples, one portrait given many texts, the face picker then the run) is not
    searched again. The answer is the one the detector gave, which is what it would give again."""

    def __init__(self, detect: DetectFn, memory: DetectionMemory):
        self._faces = candidates_of(detect)
        self._memory = memory

    def __call__(self, frames: Sequence[Frame]) -> Detections:
        return most_confident(self.faces(frames))

    def faces(self, frames: Sequence[Frame]) -> Candidates:
        keys = [frame_digest(frame) for frame in frames]
        found = [self._memory.recall(key) for key in keys]
        unknown = [i for i, faces in enumerate(found) if faces is None]
        if unknown:
            for i, faces in zip(unknown, self._faces([frames[i] for i in unknown])):
                self._memory.keep(keys[i], faces)
                found[i] = list(faces)
        return found  # type: ignore[return-value]


def frame_digest(frame: Frame) -> bytes:
    """A digest of a frame's shape, type and pixels."""
    digest = hashlib.blake2b(f"{frame.shape}{frame.dtype.str}".encode(), digest_size=DIGEST_BYTES)
    digest.update(memoryview(np.ascontiguousarray(frame)).cast("B"))
    return digest.digest()
