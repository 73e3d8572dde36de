"""A face box that moves with what it frames. The box's upper part (forehead, eyes, nose: the mouth below changes
as it speaks) is found again in each frame by normalised cross-correlation, coarsely on a small copy, then to the
pixel; the box moves as the match does (and, for --follow_box, grows or shrinks with it: a zoom).

It serves --follow_box (a face no detector finds, such as a cartoon's, set by hand on the first frame) and the
face tracker between its keyframes (follow_between): a detector's box in one keyframe is followed by its pixels
to the next, so the frames between need no detector and get the face's own path, not a straight line."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .types import Box, Frame

TEMPLATE_SHARE = 0.6  # of the box's height, from its top: the part matched (the mouth below it changes)
SEARCH_SHARE = 0.5  # of the box's side: how far the face may move from one frame to the next
COARSE_WIDTH = 48  # px: the template's width in the small copy the first search runs on
REFINE_MARGIN = 2  # px at full size, around the coarse match's cell, searched again to the pixel
MIN_MATCH = 0.5  # normalised correlation below this: the face is hidden or turned away, the box stays put
# between a detector's keyframes: a frame matching below this is left to the detector (consecutive frames of a
# moving photo matched at 0.975 or more; the test's flat cartoon face, 110 px off, at 0.58)
BETWEEN_MATCH = 0.7
REACQUIRE_MATCH = 0.6  # with reacquire: a face lost nearby is taken where the whole frame matches at least this well
MIN_TEMPLATE_STD = 2.0  # grey levels: a flatter box (black, a blank wall) holds nothing to follow yet
ZOOM_STEP = 0.03  # with zoom: how much a box may grow or shrink from one frame to the next
MIN_SIDE = 16  # px: a box following a zoom out is not made smaller than this (too little left to match)


@dataclass(frozen=True)
class _Template:
    """The matched part at one size, and its small copy for the coarse search (`coarse` times its size)."""

    full: np.ndarray
    small: np.ndarray
    coarse: float

    @classmethod
    def of(cls, grey: np.ndarray) -> "_Template":
        coarse = min(1.0, COARSE_WIDTH / max(1, grey.shape[1]))
        return cls(grey, _shrink(grey, coarse), coarse)

    @property
    def margin(self) -> int:
        """Full-size px around a coarse match's cell searched again to the pixel."""
        return round(1 / self.coarse) + REFINE_MARGIN

    def find(self, grey: np.ndarray, corner: Tuple[int, int], reach: int) -> Optional[Tuple[int, int, float]]:
        """Where it matches best within `reach` px of `corner` (top-left, full-size px of `grey`): coarsely on the
        small copies, then to the pixel around that; and how well. None when the window holds no place."""
        coarse = _best(grey, self.small, self.coarse, corner, reach)
        if coarse is None:
            return None
        return _best(grey, self.full, 1.0, (coarse[0] - self.margin, coarse[1] - self.margin), self.margin)


class BoxFollower:
    """Feed frames in order with push(); each answer is that frame's box (x1, y1, x2, y2), inside the frame.

    With `zoom`, the box also grows and shrinks with what it frames (a zoom, a face coming closer): each frame the
    template is matched a step larger and smaller too, and the best of the three sizes is kept. With `reacquire`,
    a face not found near where it was is searched for in the whole frame (it left and came back elsewhere, or the
    shot changed and changed back)."""

    def __init__(self, box: Box, zoom: bool = False, reacquire: bool = False, min_match: float = MIN_MATCH) -> None:
        self.box = box
        self._min_match = min_match
        self.lost = 0  # frames where the match was too weak (the box stayed where it was)
        self.found = False  # whether the last frame's box was matched (or is the box as given, before and where the
        # template was taken: a fade from black holds the face, dimmed)
        self._zoom, self._reacquire = zoom, reacquire
        self._given: Optional[_Template] = None  # at the size of the box as given
        self._size = (box[2] - box[0], box[3] - box[1])  # the box as given: its size at scale 1
        self._scale = 1.0  # the box's size now, over its size as given

    @property
    def following(self) -> bool:
        """Whether a template was taken (a frame had something in the box to follow)."""
        return self._given is not None

    def push(self, frame: Frame) -> Box:
        if self._given is None:
            self._start(frame)
            self.found = True
            return self.box
        moved = self._match(frame)
        if moved is None and self._reacquire:
            moved = self._search_whole(frame)
        self.found = moved is not None
        if moved is None:
            self.lost += 1
        else:
            self.box = _inside(moved, frame.shape)
        return self.box

    def _start(self, frame: Frame) -> None:
        """Take the template from this frame, unless the box holds nothing to follow there (a frame of a fade from
        black, a blank wall): the box stays where it is given until a frame has something in it."""
        x1, y1, x2, y2 = self.box
        template, _ = _grey(frame, (x1, y1, x2, y1 + _template_rows(self.box)))
        if template.size == 0 or float(template.std()) < MIN_TEMPLATE_STD:
            return
        self._given = _Template.of(template)

    def _match(self, frame: Frame) -> Optional[Box]:
        """The box moved (and, with zoom, resized) to where its template matches best near where it was; None when
        no place matches. Only the part of the frame the searches can reach is turned grey."""
        template = self._at(self._scale)
        x1, y1, x2, y2 = self.box
        reach = round(SEARCH_SHARE * max(x2 - x1, y2 - y1))
        around = reach + template.margin + 1 + (math.ceil(ZOOM_STEP * max(x2 - x1, y2 - y1)) if self._zoom else 0)
        grey, (left, top) = _grey(frame, (x1 - around, y1 - around, x2 + around,
                                          y1 + template.full.shape[0] + around))  # fmt: skip
        fine, scale = template.find(grey, (x1 - reach - left, y1 - reach - top), reach), self._scale
        if self._zoom and fine is not None:
            fine, scale = self._resized(grey, fine, template, frame.shape)
        if fine is None or fine[2] < self._min_match:
            return None
        self._scale = scale
        return self._placed(fine[0] + left, fine[1] + top)

    def _search_whole(self, frame: Frame) -> Optional[Box]:
        """The box where the whole frame matches its template best (at its size now), if well enough."""
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        fine = self._at(self._scale).find(grey, (0, 0), max(grey.shape))
        return None if fine is None or fine[2] < REACQUIRE_MATCH else self._placed(fine[0], fine[1])

    def _placed(self, left: int, top: int) -> Box:
        """The box at its size now with its top-left corner here."""
        width, height = (max(1, round(side * self._scale)) for side in self._size)
        return left, top, left + width, top + height

    def _resized(self, grey: np.ndarray, fine: Tuple[int, int, float], template: _Template,
                 shape: Tuple[int, ...]) -> Tuple[Tuple[int, int, float], float]:  # fmt: skip
        """The best of the match at this size and the template a step larger and smaller, centred where it matched;
        and the scale that made it."""
        best, chosen = fine, self._scale
        rows, cols, margin = *template.full.shape, template.margin
        for scale in self._steps(shape):
            other = self._resized_template(scale)
            corner = (fine[0] + (cols - other.shape[1]) // 2 - margin, fine[1] + (rows - other.shape[0]) // 2 - margin)
            found = _best(grey, other, 1.0, corner, margin)
            if found is not None and found[2] > best[2]:
                best, chosen = found, scale
        return best, chosen

    def _steps(self, shape: Tuple[int, ...]) -> List[float]:
        """The sizes tried besides this one: a step either way, no smaller than MIN_SIDE px, no larger than the
        frame (`shape`)."""
        width, height = self._size
        largest = min(shape[1] / max(1, width), shape[0] / max(1, height))
        smallest = MIN_SIDE / max(1, min(width, height))
        return [s for s in (self._scale * (1 - ZOOM_STEP), self._scale * (1 + ZOOM_STEP)) if smallest <= s <= largest]

    def _at(self, scale: float) -> _Template:
        """The template at `scale` times the size it was taken at (resized from that, so no drift builds up)."""
        assert self._given is not None
        return self._given if scale == 1.0 else _Template.of(self._resized_template(scale))

    def _resized_template(self, scale: float) -> np.ndarray:
        assert self._given is not None
        rows, cols = self._given.full.shape
        size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
        return cv2.resize(self._given.full, size, interpolation=cv2.INTER_LINEAR)


def follow_between(frames: Sequence[Frame], first: Box, last: Box, tolerance: float) -> Optional[List[Box]]:
    """Boxes for frames[1:-1], given a detector's boxes in frames[0] (`first`) and frames[-1] (`last`): the face
    followed by its pixels from `first`, its path bent to end at `last`, its size changing evenly from one box's
    to the other's. None when following loses the face in some frame or ends further than `tolerance` face sizes
    from `last` (turned, hidden, another face): then only a detector can tell where it is."""
    follower = BoxFollower(first, min_match=BETWEEN_MATCH)
    follower.push(frames[0])
    if not follower.following:
        return None
    path = [first]
    for frame in frames[1:]:
        path.append(follower.push(frame))
        if follower.lost:
            return None
    size = max(first[2] - first[0], first[3] - first[1], 1)
    if max(abs(_centre(path[-1], i) - _centre(last, i)) for i in (0, 1)) > tolerance * size:
        return None
    return [_bent(first, last, path, i, frames[i].shape) for i in range(1, len(frames) - 1)]


def _centre(box: Box, axis: int) -> float:
    return (box[axis] + box[axis + 2]) / 2


def _bent(first: Box, last: Box, path: Sequence[Box], index: int, shape: Tuple[int, ...]) -> Box:
    """Frame `index`'s box: as far from `first` to `last` as the frame is along the path, moved by how far the
    followed path's centre strays there from the straight line between its ends. Clipped to the frame."""
    t = index / (len(path) - 1)
    offset = [_centre(path[index], i) - (_centre(path[0], i) + (_centre(path[-1], i) - _centre(path[0], i)) * t)
              for i in (0, 1)]  # fmt: skip
    x1, y1, x2, y2 = (p + (q - p) * t + offset[i % 2] for i, (p, q) in enumerate(zip(first, last)))
    rows, cols = shape[:2]
    return (max(0, round(x1)), max(0, round(y1)), min(cols, round(x2)), min(rows, round(y2)))


def _template_rows(box: Box) -> int:
    return max(2, round((box[3] - box[1]) * TEMPLATE_SHARE))


def _grey(frame: Frame, box: Box) -> Tuple[np.ndarray, Tuple[int, int]]:
    """The part of the frame inside `box` (clipped to the frame) in grey, and its top-left corner."""
    rows, cols = frame.shape[:2]
    left, top = min(cols, max(0, box[0])), min(rows, max(0, box[1]))
    right, bottom = max(left, min(cols, box[2])), max(top, min(rows, box[3]))
    part = frame[top:bottom, left:right]
    if part.size == 0:
        return np.zeros((bottom - top, right - left), np.uint8), (left, top)
    return cv2.cvtColor(part, cv2.COLOR_BGR2GRAY), (left, top)


def _shrink(image: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _best(grey: np.ndarray, template: np.ndarray, scale: float, corner: Tuple[int, int],
          reach: int) -> Optional[Tuple[int, int, float]]:  # fmt: skip
    """Where (top-left, in full-size pixels) the template (of a copy `scale` times the frame's size) matches best
    within `reach` full-size pixels of `corner` on either side, and how well; None when the window holds no place."""
    rows, cols = grey.shape
    height, width = template.shape
    full_h, full_w = round(height / scale), round(width / scale)
    left, top = max(0, corner[0]), max(0, corner[1])
    right = min(cols, corner[0] + 2 * reach + full_w)
    bottom = min(rows, corner[1] + 2 * reach + full_h)
    window = _shrink(grey[top:bottom, left:right], scale)
    if window.shape[0] < height or window.shape[1] < width:
        return None
    scores = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
    _, score, _, (x, y) = cv2.minMaxLoc(np.nan_to_num(scores, nan=-1.0))
    return left + round(x / scale), top + round(y / scale), float(score)


def _inside(box: Box, shape: Tuple[int, ...]) -> Box:
    """The box shifted (not shrunk) to lie inside the frame."""
    x1, y1, x2, y2 = box
    rows, cols = shape[:2]
    dx = -x1 if x1 < 0 else min(0, cols - x2)
    dy = -y1 if y1 < 0 else min(0, rows - y2)
    return x1 + dx, y1 + dy, x2 + dx, y2 + dy
