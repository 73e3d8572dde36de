"""A face box that moves with what it frames. The box's upper part (forehead, eyes, nose: the mouth below changes
as it speaks) is found again in each frame by normalised cross-correlation, coarsely on a small copy, then to the
pixel; the box keeps its size and moves as the match does.

It serves --follow_box (a face no detector finds, such as a cartoon's, set by hand on the first frame) and the
face tracker between its keyframes (follow_between): a detector's box in one keyframe is followed by its pixels
to the next, so the frames between need no detector and get the face's own path, not a straight line."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .types import Box, Frame

TEMPLATE_SHARE = 0.6  # of the box's height, from its top: the part matched (the mouth below it changes)
SEARCH_SHARE = 0.5  # of the box's side: how far the face may move from one frame to the next
COARSE_WIDTH = 48  # px: the template's width in the small copy the first search runs on
REFINE_MARGIN = 2  # px at full size, around the coarse match's cell, searched again to the pixel
MIN_MATCH = 0.5  # normalised correlation below this: the face is hidden or turned away, the box stays put
MIN_TEMPLATE_STD = 2.0  # grey levels: a flatter box (black, a blank wall) holds nothing to follow yet


class BoxFollower:
    """Feed frames in order with push(); each answer is that frame's box (x1, y1, x2, y2), inside the frame."""

    def __init__(self, box: Box) -> None:
        self.box = box
        self._template: Optional[np.ndarray] = None
        self._small: Optional[np.ndarray] = None
        self._scale = 1.0
        self.lost = 0  # frames where the match was too weak (the box stayed where it was)

    @property
    def following(self) -> bool:
        """Whether a template was taken (a frame had something in the box to follow)."""
        return self._template is not None

    def push(self, frame: Frame) -> Box:
        if self._template is None:
            self._start(frame)
            return self.box
        moved = self._match(frame)
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
        self._template = template
        self._scale = min(1.0, COARSE_WIDTH / max(1, x2 - x1))
        self._small = _shrink(template, self._scale)

    def _match(self, frame: Frame) -> Optional[Box]:
        """The box moved to where its template matches best near where it was; None when no place matches. Only
        the part of the frame the searches can reach is turned grey."""
        assert self._template is not None and self._small is not None
        x1, y1, x2, y2 = self.box
        reach = round(SEARCH_SHARE * max(x2 - x1, y2 - y1))
        margin = round(1 / self._scale) + REFINE_MARGIN
        around = reach + margin + 1
        grey, (left, top) = _grey(frame, (x1 - around, y1 - around, x2 + around,
                                          y1 + self._template.shape[0] + around))  # fmt: skip
        coarse = _best(grey, self._small, self._scale, (x1 - reach - left, y1 - reach - top), reach)
        if coarse is None:
            return None
        fine = _best(grey, self._template, 1.0, (coarse[0] - margin, coarse[1] - margin), margin)
        if fine is None or fine[2] < MIN_MATCH:
            return None
        return fine[0] + left, fine[1] + top, fine[0] + left + x2 - x1, fine[1] + top + y2 - y1


def follow_between(frames: Sequence[Frame], first: Box, last: Box, tolerance: float) -> Optional[List[Box]]:
    """Boxes for frames[1:-1], given a detector's boxes in frames[0] (`first`) and frames[-1] (`last`): the face
    followed by its pixels from `first`, its path bent to end at `last`, its size changing evenly from one box's
    to the other's. None when following loses the face in some frame or ends further than `tolerance` face sizes
    from `last` (turned, hidden, another face): then only a detector can tell where it is."""
    follower = BoxFollower(first)
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
    followed path strays there from the straight line between its own ends. Clipped to the frame."""
    t = index / (len(path) - 1)
    offset = [path[index][i] - (path[0][i] + (path[-1][i] - path[0][i]) * t) for i in (0, 1)]
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
