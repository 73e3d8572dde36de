"""Face enhancement around the enhancer network: which square of the full-resolution frame GPEN sees, and how
its result goes back, only through the feathered lower-face mask of the region Wav2Lip redrew.

No paddle here: the network is a predictor (lipsync.engine.Enhancer); this module turns frames into its input
(RGB, as GPEN was trained, in [-1, 1]) and its output back into frames (BGR uint8).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, List, Sequence, Tuple

import cv2
import numpy as np

from .blend import feather_weights
from .types import Box, Frame

log = logging.getLogger(__name__)

CROP_GROWTH = 1.8  # crop side / the padded face box's longer side: forehead, ears and chin with room, as in FFHQ
PAD_BORDER = cv2.BORDER_REFLECT_101  # a crop reaching past the frame edge is filled by mirroring
PLAN_CACHE_SIZE = 256  # distinct (box, frame size) plans kept: a still has one, smoothed boxes repeat
PIXEL_SCALE = 127.5  # uint8 <-> [-1, 1]: x / 127.5 - 1
CHANNELS = 3
SECONDS_PER_MINUTE = 60
# Logged (the command line prints it) before the frames are worked on, when GPEN runs on the CPU.
ENHANCE_ON_CPU = ("note: face enhancement on the CPU adds about {extra} ({frames} faces at ~{each:.1f} s "
                  "each, estimated from GPEN's cost); a GPU does it in seconds")


@dataclass(frozen=True)
class CropPlan:
    """Where one face's crop and mask sit in a frame, computed once per (box, frame size).

    The crop is the square [left, left + side) x [top, top + side) in frame pixels (it may reach past the
    frame); `region` (x1, y1, x2, y2) is the part of the face box inside the frame, the only pixels that may
    change; mask/inverse are the feather weights over that region."""

    left: int
    top: int
    side: int
    region: Box
    mask: np.ndarray
    inverse: np.ndarray


@lru_cache(maxsize=PLAN_CACHE_SIZE)
def plan(box: Box, frame_height: int, frame_width: int) -> CropPlan:
    """The square crop centred on `box` (x1, y1, x2, y2), CROP_GROWTH times its longer side, and its mask."""
    x1, y1, x2, y2 = (int(v) for v in box)
    side = max(1, int(round(max(x2 - x1, y2 - y1) * CROP_GROWTH)))
    left = int(round((x1 + x2 - side) / 2))
    top = int(round((y1 + y2 - side) / 2))
    mask, inverse = feather_weights(y2 - y1, x2 - x1)
    rx1, ry1 = max(x1, 0), max(y1, 0)
    rx2, ry2 = min(x2, frame_width), min(y2, frame_height)
    inside = (slice(ry1 - y1, ry2 - y1), slice(rx1 - x1, rx2 - x1))
    return CropPlan(left, top, side, (rx1, ry1, rx2, ry2), mask[inside], inverse[inside])


def frame_plan(frame: Frame, box: Sequence[int]) -> CropPlan:
    height, width = frame.shape[:2]
    return plan(tuple(int(v) for v in box), height, width)  # type: ignore[arg-type]


def crop(frame: Frame, where: CropPlan) -> Frame:
    """The plan's square of the frame at full resolution, mirrored where it reaches past the frame edge."""
    height, width = frame.shape[:2]
    x1, y1 = max(where.left, 0), max(where.top, 0)
    x2, y2 = min(where.left + where.side, width), min(where.top + where.side, height)
    inside = frame[y1:y2, x1:x2]
    borders = (y1 - where.top, where.top + where.side - y2, x1 - where.left, where.left + where.side - x2)
    if not any(borders):
        return inside
    return cv2.copyMakeBorder(inside, *borders, PAD_BORDER)


def resize(image: Frame, side: int) -> Frame:
    """A square image at side x side: area averaging to shrink, bicubic to enlarge."""
    if image.shape[0] == side:
        return image
    method = cv2.INTER_AREA if image.shape[0] > side else cv2.INTER_CUBIC
    return cv2.resize(image, (side, side), interpolation=method)


def network_input(frames: Sequence[Frame], plans: Sequence[CropPlan], size: int) -> np.ndarray:
    """GPEN's input for these frames: each plan's crop at size x size, BGR -> RGB, NCHW float32 in [-1, 1]."""
    batch = np.empty((len(frames), CHANNELS, size, size), np.float32)
    for index, (frame, where) in enumerate(zip(frames, plans)):
        rgb = cv2.cvtColor(resize(crop(frame, where), size), cv2.COLOR_BGR2RGB)
        batch[index] = rgb.transpose(2, 0, 1)
    batch /= PIXEL_SCALE
    batch -= 1.0
    return batch


def network_faces(output: np.ndarray) -> List[Frame]:
    """GPEN's output (NCHW RGB, about [-1, 1]) as HxWx3 uint8 BGR images."""
    pixels = np.clip(np.rint((output + 1.0) * PIXEL_SCALE), 0, 255).astype(np.uint8)
    return [cv2.cvtColor(np.ascontiguousarray(face.transpose(1, 2, 0)), cv2.COLOR_RGB2BGR) for face in pixels]


def put_back(frame: Frame, where: CropPlan, face: Frame) -> Frame:
    """Blend the enhanced crop `face` (any square size) into `frame` in place, only through the plan's mask."""
    x1, y1, x2, y2 = where.region
    if x2 <= x1 or y2 <= y1:
        return frame
    enhanced = resize(face, where.side)[y1 - where.top : y2 - where.top, x1 - where.left : x2 - where.left]
    region = frame[y1:y2, x1:x2]
    region[...] = cv2.blendLinear(enhanced, region, where.mask, where.inverse)
    return frame


def enhance_frames(frames: Sequence[Frame], boxes: Sequence[Sequence[int]], size: int,
                   run: Callable[[np.ndarray], np.ndarray]) -> None:
    """Enhance each frame's face in place: `run` maps network_input batches to GPEN output batches."""
    plans = [frame_plan(frame, box) for frame, box in zip(frames, boxes)]
    faces = network_faces(run(network_input(frames, plans, size)))
    for frame, where, face in zip(frames, plans, faces):
        put_back(frame, where, face)


def crop_box(where: CropPlan) -> Tuple[int, int, int, int]:
    """The crop square as (x1, y1, x2, y2) in frame pixels (may reach past the frame)."""
    return where.left, where.top, where.left + where.side, where.top + where.side


def announce_cpu_time(frames: int, size: int, threads: int) -> None:
    """Log (the command line prints it) the time GPEN of this side is expected to add on the CPU."""
    from .enhance import cpu_seconds  # paddle is loaded by now: the enhancer is

    seconds = cpu_seconds(frames, size, threads)
    extra = f"{seconds:.0f} s" if seconds < SECONDS_PER_MINUTE else f"{seconds / SECONDS_PER_MINUTE:.0f} min"
    log.warning(ENHANCE_ON_CPU.format(extra=extra, frames=frames, each=seconds / max(1, frames)))
