"""A still's output as one picture and the part of it that changes: ffmpeg converts the picture to yuv once and
lays each frame's changed part over it, so a frame costs the pipe, the colour conversion and the copies of that
part alone, not of the whole frame (a 12-megapixel photo's frame is 36 MB of BGR, its face a few hundred KB)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np

from lipsync import blend
from lipsync.options import BlendMode
from lipsync.types import Box, Frame

Paste = Callable[[Frame, Box, np.ndarray], Frame]  # (frame, box, generated face) -> the frame to send

# swscale's flags for a still's colour conversion: "area" with accurate rounding takes each 2x2 block's chroma
# from its own four pixels (the plain average), so a part converted alone is exactly that part of the whole
# converted; the default fast path is not (its chroma sits off by up to 18 levels at sharp edges).
SCALE_FLAGS = "area+accurate_rnd"
ALIGN = 2  # px: yuv420p holds one chroma sample per 2x2 block, so a part starts and ends on even pixels
MAX_SHARE = 0.5  # a changing part larger than this share of the frame: whole frames are sent, as for a video


@dataclass(frozen=True)
class Region:
    """A rectangle of a frame: its top-left corner and size in pixels."""

    x: int
    y: int
    width: int
    height: int

    def cut(self, frame: Frame) -> Frame:
        """The region's pixels of a frame (a view)."""
        return frame[self.y : self.y + self.height, self.x : self.x + self.width]

    def shift(self, box: Box) -> Box:
        """A frame box in the region's own pixels."""
        x1, y1, x2, y2 = box
        return (x1 - self.x, y1 - self.y, x2 - self.x, y2 - self.y)


@dataclass(frozen=True)
class Canvas:
    """A still's frame saved as raw BGR (the writer's frame size), and the region of it each output frame changes."""

    picture: Path
    region: Region


def changing_region(shape: Tuple[int, ...], box: Box) -> Optional[Region]:
    """The part of a still's frame that pasting into `box` can change, grown to even pixels; None when whole
    frames are better sent (an odd frame side, or a part that is most of the frame)."""
    height, width = shape[:2]
    if height % ALIGN or width % ALIGN:
        return None
    x1, y1 = max(0, box[0]), max(0, box[1])
    x2, y2 = min(width, box[2]), min(height, box[3])
    if x2 <= x1 or y2 <= y1:
        return None
    x1, y1 = x1 - x1 % ALIGN, y1 - y1 % ALIGN
    x2, y2 = x2 + (-x2) % ALIGN, y2 + (-y2) % ALIGN
    region = Region(x1, y1, x2 - x1, y2 - y1)
    if region.width * region.height > MAX_SHARE * width * height:
        return None
    return region


def save(frame: Frame, region: Region, folder: Path) -> Canvas:
    """The still's frame written raw into `folder` (the run's temp dir) for the encoder to read once."""
    path = folder / f"canvas-{secrets.token_hex(4)}.bgr"
    path.write_bytes(memoryview(np.ascontiguousarray(frame)).cast("B"))
    return Canvas(path, region)


def for_still(frame: Frame, box: Optional[Box], mode: BlendMode, folder: Path) -> Optional[Canvas]:
    """A still's canvas (its frame saved into `folder`) when a paste in `mode` into its one `box` changes a small
    enough part of it (a feathered paste leaves the upper face); None: whole frames are sent. The one box serves
    every frame of a still, so with a canvas every frame is sent as its region."""
    if box is None:
        return None
    region = changing_region(frame.shape, blend.changed_box(box, mode))
    return None if region is None else save(frame, region, folder)


def paster(board: Optional[Canvas], mode: BlendMode, copy: bool) -> Paste:
    """The paste a run sends frames through: the mouth pasted into the frame itself, into a copy (`copy`: a
    still's one frame), or, given a canvas, into a copy of its region (what the writer then takes)."""

    def paste(frame: Frame, box: Box, mouth: np.ndarray) -> Frame:
        if board is not None:
            region = board.region
            return blend.paste(region.cut(frame).copy(), region.shift(box), mouth, mode, inplace=True)
        return blend.paste(frame, box, mouth, mode, inplace=not copy)

    return paste
