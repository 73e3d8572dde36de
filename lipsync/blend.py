"""Put generated mouths back into frames: the reference's hard box paste, or a feathered lower-face blend."""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from lipsync.mouth import FACE_SIZE
from lipsync.options import BLEND_MODES, BlendMode
from lipsync.types import Box, Frame

# Feather mask geometry, as fractions of the box (0 = top/left edge, 1 = bottom/right edge).
# The generator redraws the lower half of its 96x96 crop; its upper half is a blurry copy of the input,
# so the mask keeps the original face above the nose and takes the generated mouth and jaw fully.
RISE_START = 0.38  # mask starts rising from 0 here (around the nose bridge)
RISE_END = 0.60  # fully opaque from here down (nose tip, mouth, jaw)
BOTTOM_FADE = 0.08  # fades to 0 over this last part of the height (below the chin)
SIDE_FADE = 0.12  # fades to 0 over this width at the left and right edges (cheeks)
MASK_CACHE_SIZE = 256  # distinct box sizes kept; smoothed boxes repeat sizes a lot


def _smoothstep(t: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 up to `start`, 1 from `end`, a C1-smooth cubic in between."""
    x = np.clip((t - start) / (end - start), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def feather_mask(height: int, width: int) -> np.ndarray:
    """height x width float32 weights in [0, 1] for the generated face: 0 on the box border, 1 over the mouth."""
    v = np.linspace(0.0, 1.0, height, dtype=np.float32)  # edge pixels sit exactly at 0 and 1
    u = np.linspace(0.0, 1.0, width, dtype=np.float32)
    vertical = _smoothstep(v, RISE_START, RISE_END) * _smoothstep(1.0 - v, 0.0, BOTTOM_FADE)
    horizontal = _smoothstep(u, 0.0, SIDE_FADE) * _smoothstep(1.0 - u, 0.0, SIDE_FADE)
    return np.outer(vertical, horizontal).astype(np.float32)


@lru_cache(maxsize=MASK_CACHE_SIZE)
def feather_weights(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask, 1 - mask) for cv2.blendLinear, cached per box size and read-only."""
    mask = feather_mask(height, width)
    inverse = 1.0 - mask
    mask.flags.writeable = False
    inverse.flags.writeable = False
    return mask, inverse


@lru_cache(maxsize=MASK_CACHE_SIZE)
def first_weighted_row(height: int, width: int) -> int:
    """The first row of a height x width box that the feather mask gives any weight to: a feathered paste leaves
    the rows above it (the upper face) as they are. 0 when no row has weight (a box too small to feather)."""
    weighted = np.flatnonzero(feather_weights(height, width)[0].any(axis=1))
    return int(weighted[0]) if weighted.size else 0


def changed_box(box: Box, mode: BlendMode) -> Box:
    """The part of `box` = (x1, y1, x2, y2) that a paste in `mode` can change: all of it ("box"), or for "feather"
    its rows from first_weighted_row down."""
    x1, y1, x2, y2 = box
    if mode == "box" or x2 <= x1 or y2 <= y1:
        return box
    return (x1, y1 + first_weighted_row(y2 - y1, x2 - x1), x2, y2)


def first_row_read(mode: BlendMode, face_size: int = FACE_SIZE) -> int:
    """The first row of a generated face (face_size rows) that a paste in `mode` can read, whatever the box: the
    generator need not draw the rows above it. "box" reads them all. "feather" gives weight 0 to box rows
    y <= RISE_START * (height - 1); the first row after them samples the face (bilinear, half-pixel centres) at
    (y + 0.5) * face_size / height - 0.5 > face_size * RISE_START - 0.5, as RISE_START < 0.5."""
    if mode == "box":
        return 0
    return math.floor(face_size * RISE_START - 0.5)


def _fit(mouth: Frame, width: int, height: int) -> Frame:
    """The generated face at box size (bilinear, as the reference), unless it already is."""
    if mouth.shape[:2] == (height, width):
        return mouth
    return cv2.resize(mouth, (width, height), interpolation=cv2.INTER_LINEAR)


def paste(frame: Frame, box: Box, mouth: Frame, mode: BlendMode = "feather", *, inplace: bool = False) -> Frame:
    """Frame with the generated face `mouth` (96x96x3 uint8 BGR, or box-sized) put into `box` = (x1, y1, x2, y2).

    "box" overwrites the box (the reference); "feather" blends with feather_mask so no seam shows.
    Pixels outside the box are untouched; parts of the box outside the frame are dropped.
    Returns a new frame unless inplace=True.
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"blend mode {mode!r}, expected one of {BLEND_MODES}")
    x1, y1, x2, y2 = (int(value) for value in box)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty box {box}")
    if mouth.dtype != np.uint8 or mouth.ndim != 3 or mouth.shape[2] != 3:
        raise ValueError(f"mouth must be HxWx3 uint8, got {mouth.shape} {mouth.dtype}")
    out = frame if inplace else frame.copy()
    frame_height, frame_width = frame.shape[:2]
    left, top = max(x1, 0), max(changed_box((x1, y1, x2, y2), mode)[1], 0)  # rows weighted 0 stay as they are
    right, bottom = min(x2, frame_width), min(y2, frame_height)
    if right <= left or bottom <= top:
        return out
    inside = (slice(top - y1, bottom - y1), slice(left - x1, right - x1))  # the visible part, in box pixels
    patch = _fit(mouth, x2 - x1, y2 - y1)[inside]
    region = out[top:bottom, left:right]
    if mode == "box":
        region[...] = patch
    else:
        mask, inverse = feather_weights(y2 - y1, x2 - x1)
        region[...] = cv2.blendLinear(patch, region, mask[inside], inverse[inside])
    return out
