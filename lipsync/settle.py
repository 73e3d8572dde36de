"""Face boxes made final a few frames behind the tracker, so the lip-sync pass can take frames while the faces of
later ones are still being found.

A run's boxes are finished (filled between detections, short misses bridged, padded, smoothed within each run of
frames with the face) by one function over the whole video. Each of those steps looks only a few frames around a
frame: the boxes found either side of it (at most the tracker's keyframe interval away), a miss of at most
shots.MISSED_FRAMES frames, the SMOOTH_WINDOW boxes from it on. So that function, run over a window that reaches
that far back and ends where the tracker has settled, gives the frames up to LAG before the window's end exactly
the boxes it gives them over the whole video; a Settler releases those, in order. (A frame without the face keeps
a box nothing reads; within a long absence it may differ from the whole video's interpolation.)
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from . import shots
from .types import Box

# Frames behind the tracker's settled ones whose boxes may still change: the smoothing window reaches this far
# ahead, and a trailing miss may yet be bridged (6 is the least that holds: tests/test_settle.py fails with 5;
# 8 leaves room).
LAG = shots.SMOOTH_WINDOW + shots.MISSED_FRAMES + 1
# (found, absent, cuts, first, check_from) of a window of frames → their boxes (n, 4) and whether the face is in
# each; `first` is the window's first frame in the video, cuts are the window's own indices, and boxes from
# `check_from` on are the ones about to be released (checked for what the user must fix).
Finish = Callable[[Sequence[Optional[Box]], Sequence[bool], Sequence[int], int, int], Tuple[np.ndarray, np.ndarray]]


class Settler:
    """Takes each frame's found box and absence as the tracker settles them; releases boxes once final.

    `reach` is how far before a frame the box that places it may lie (the tracker's keyframe interval). Nothing is
    released before a face was found: frames before the first face take its box, as over the whole video."""

    def __init__(self, finish: Finish, reach: int) -> None:
        self._finish = finish
        self._context = max(1, reach) + 2 * LAG  # frames before the first unreleased one the window starts at
        self._found: List[Optional[Box]] = []
        self._absent: List[bool] = []
        self._released = 0
        self._seen_face = False

    @property
    def settled(self) -> int:
        return len(self._found)

    @property
    def released(self) -> int:
        return self._released

    def add(self, found: Sequence[Optional[Box]], absent: Sequence[bool]) -> None:
        """The next settled frames' boxes (None: not found) and whether the face is away in each."""
        if len(found) != len(absent):
            raise ValueError(f"{len(found)} boxes but {len(absent)} absences")
        self._found.extend(found)
        self._absent.extend(absent)
        self._seen_face = self._seen_face or any(box is not None for box in found)

    def release(self, cuts: Sequence[int], end: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Boxes (n, 4) and presence of the frames made final since the last call, from the first unreleased on;
        `cuts` are the video's shot cuts so far; `end`: every frame was added (all are final, and a video without
        a face anywhere raises what the whole video's finish raises)."""
        stop = self.settled if end else self.settled - LAG
        if stop <= self._released or not (self._seen_face or end):
            return np.zeros((0, 4), np.int64), np.zeros(0, bool)
        start = max(0, self._released - self._context)
        found, absent = self._found[start:self.settled], self._absent[start:self.settled]
        window_cuts = [c - start for c in cuts if start <= c < self.settled]
        first = self._released - start
        if self._seen_face and all(box is None for box in found):  # a long absence: no box in reach, no face
            boxes, present = np.zeros((len(found), 4), np.int64), np.zeros(len(found), bool)
        else:  # (at the end without a face anywhere, this raises what the whole video's finish raises)
            boxes, present = self._finish(found, absent, window_cuts, start, first)
        count = stop - self._released
        self._released = stop
        return boxes[first:first + count], present[first:first + count]
