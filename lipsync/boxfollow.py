"""A given face box that moves with what it frames (--follow_box): for a face no detector finds, such as a
cartoon's, set by hand on the first frame. The box's upper part (forehead, eyes, nose: the mouth below changes
as it speaks) is found again in each frame by normalised cross-correlation, coarsely on a small copy, then to the
pixel; the box keeps its size and moves as the match does."""

from __future__ import annotations

from typing import Optional, Tuple

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

    def push(self, frame: Frame) -> Box:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if self._template is None:
            self._start(grey)
            return self.box
        moved = self._match(grey)
        if moved is None:
            self.lost += 1
        else:
            self.box = _inside(moved, grey.shape)
        return self.box

    def _start(self, grey: np.ndarray) -> None:
        """Take the template from this frame, unless the box holds nothing to follow there (a frame of a fade from
        black, a blank wall): the box stays where it is given until a frame has something in it."""
        x1, y1, x2, y2 = self.box
        template = grey[y1 : y1 + _template_rows(self.box), x1:x2]
        if float(template.std()) < MIN_TEMPLATE_STD:
            return
        self._template = template
        self._scale = min(1.0, COARSE_WIDTH / max(1, x2 - x1))
        self._small = _shrink(template, self._scale)

    def _match(self, grey: np.ndarray) -> Optional[Box]:
        """The box moved to where its template matches best near where it was; None when no place matches."""
        assert self._template is not None and self._small is not None
        x1, y1, x2, y2 = self.box
        reach = round(SEARCH_SHARE * max(x2 - x1, y2 - y1))
        coarse = _best(grey, self._small, self._scale, (x1 - reach, y1 - reach), reach)
        if coarse is None:
            return None
        margin = round(1 / self._scale) + REFINE_MARGIN
        fine = _best(grey, self._template, 1.0, (coarse[0] - margin, coarse[1] - margin), margin)
        if fine is None or fine[2] < MIN_MATCH:
            return None
        return fine[0], fine[1], fine[0] + x2 - x1, fine[1] + y2 - y1


def _template_rows(box: Box) -> int:
    return max(2, round((box[3] - box[1]) * TEMPLATE_SHARE))


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
