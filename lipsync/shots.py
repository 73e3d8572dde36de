"""Shots and face presence over time: scene cuts, the runs of frames that hold the followed face, smoothing
within a run (never across a cut or a frame without the face)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .errors import LipSyncError
from .types import Box, Frame

CUT_SIDE = 64  # px: frames are compared as grey thumbnails this wide (noise and small motion average out)
# Mean absolute difference (0–255) between consecutive thumbnails that marks a scene cut: a 9 px jerk of the
# test clip gives about 3, a fast pan 10–20, a cut between two shots 30 or more.
CUT_MEAN_DIFF = 30.0
SMOOTH_WINDOW = 5  # boxes averaged per frame, as the reference does
# A face not found in at most this many frames in a row, with it on both sides in one shot, was missed by the
# detector (motion blur, a blink of a turn): those frames take interpolated boxes instead of passing through.
MISSED_FRAMES = 2


class CutDetector:
    """Says whether each frame starts a new shot, comparing it with the frame before."""

    def __init__(self, threshold: float = CUT_MEAN_DIFF) -> None:
        self._threshold = threshold
        self._previous: Optional[np.ndarray] = None

    def cut(self, frame: Frame) -> bool:
        thumb = thumbnail(frame)
        before, self._previous = self._previous, thumb
        if before is None or before.shape != thumb.shape:
            return False
        return float(np.abs(thumb - before).mean()) > self._threshold


def thumbnail(frame: Frame) -> np.ndarray:
    """A small grey copy of the frame, float32, CUT_SIDE px wide."""
    height, width = frame.shape[:2]
    size = (CUT_SIDE, max(1, round(height * CUT_SIDE / max(width, 1))))
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)


def runs(present: Sequence[bool], cuts: Sequence[int] = ()) -> List[Tuple[int, int]]:
    """(start, stop) of each stretch of frames with the face, split where a shot begins."""
    cut_set = set(cuts)
    found: List[Tuple[int, int]] = []
    start: Optional[int] = None
    for index, here in enumerate(present):
        if start is not None and (not here or index in cut_set):
            found.append((start, index))
            start = None
        if here and start is None:
            start = index
    if start is not None:
        found.append((start, len(present)))
    return found


def bridge_misses(absent: Sequence[bool], cuts: Sequence[int] = (), longest: int = MISSED_FRAMES) -> List[bool]:
    """`absent` without its short gaps (at most `longest` frames) that have the face on both sides in one shot."""
    out, cut_set, n = list(absent), set(cuts), len(absent)
    start = 0
    while start < n:
        if not absent[start]:
            start += 1
            continue
        stop = start
        while stop < n and absent[stop]:
            stop += 1
        inside = start > 0 and stop < n and not cut_set.intersection(range(start, stop + 1))
        if inside and stop - start <= longest:
            out[start:stop] = [False] * (stop - start)
        start = stop
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


def smooth_runs(boxes: np.ndarray, present: Sequence[bool], cuts: Sequence[int] = (),
                window: int = SMOOTH_WINDOW) -> np.ndarray:  # fmt: skip
    """smooth() within each run of frames with the face: boxes never mix across a cut or a gap."""
    out = boxes.astype(np.int64).copy()
    for start, stop in runs(present, cuts):
        out[start:stop] = smooth(boxes[start:stop], window)
    return out


NO_FACE_ADVICE = ("try a clearer, front-facing picture, --face_detector haar, or give the face position with "
                  "--box y1 y2 x1 x2")


def fill_gaps(boxes: Sequence[Optional[Box]], source: str, advice: str = NO_FACE_ADVICE) -> np.ndarray:
    """Frames without a box take one interpolated between the nearest frames that have one (frames where the
    face is away keep such a box too: the caller knows them and leaves them alone)."""
    found = [i for i, b in enumerate(boxes) if b is not None]
    if not found:
        raise LipSyncError(f"No face found in any frame of {source} — {advice}")
    known = np.array([boxes[i] for i in found], dtype=np.float64)
    index = np.arange(len(boxes))
    filled = np.stack([np.interp(index, found, known[:, k]) for k in range(4)], axis=1)
    return np.round(filled).astype(np.int64)
