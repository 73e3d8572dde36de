"""Frame and box geometry, checked before any network runs: what --resize_factor, --rotate, --crop, --box and
--pads leave of the frames and the face, with what to change when it is nothing."""

from __future__ import annotations

from fractions import Fraction
from typing import Tuple

import numpy as np

from . import faces, video
from .errors import LipSyncError
from .options import NO_CROP, LipSyncOptions

MIN_FRAME_SIDE = 32  # px: pictures and videos smaller than this cannot hold a face the generator can use
MIN_BOX_SIDE = 2  # px: a face box needs at least this much each way to be cropped and resized
EDGE = -1  # in --crop: that edge of the frame

Size = Tuple[int, int]  # width, height


def check_source(info: video.MediaInfo) -> None:
    """A picture or video too small to hold a face is the user's mistake, said before any work."""
    if min(info.width, info.height) < MIN_FRAME_SIDE:
        raise LipSyncError(f"{info.path.name} is only {info.width}×{info.height} px: too small to hold a face "
                           f"(give at least {MIN_FRAME_SIDE}×{MIN_FRAME_SIDE} px, ideally a few hundred)")


def frame_size(info: video.MediaInfo, options: LipSyncOptions) -> Size:
    """The size of the frames a run works on (after --resize_factor, --rotate, --crop and the fit to what
    players decode), from the probed size alone; a LipSyncError when those leave too little of the frame."""
    _check_resize(info, options.resize_factor)
    whole = video.transformed_size(info.width, info.height, options.resize_factor, options.rotate, NO_CROP)
    _check_crop(options.crop, whole)
    width, height = video.fitted_size(
        *video.transformed_size(info.width, info.height, options.resize_factor, options.rotate, options.crop)
    )
    if min(width, height) < MIN_FRAME_SIDE:
        raise LipSyncError(f"--crop {_words(options.crop)} leaves {width}×{height} px of the {whole[0]}×{whole[1]} "
                           f"frame: too small to hold a face (keep at least {MIN_FRAME_SIDE} px each way)")
    check_pads(options.pads, (width, height))
    if options.box is not None:
        faces.fixed_box(options.box, (height, width))
    return width, height


def pixel_aspect(info: video.MediaInfo, options: LipSyncOptions) -> Fraction:
    """How much wider than tall the pixels of the frames a run works on are shown: the video's own (an anamorphic
    video's are not square), turned with --rotate; --resize_factor, --crop and the fit keep it."""
    return 1 / info.pixel_aspect if options.rotate else info.pixel_aspect


def _check_resize(info: video.MediaInfo, factor: int) -> None:
    width, height = info.width // factor, info.height // factor
    if min(width, height) >= MIN_FRAME_SIDE:
        return
    most = max(1, min(info.width, info.height) // MIN_FRAME_SIDE)
    raise LipSyncError(f"--resize_factor {factor} shrinks the {info.width}×{info.height} px frames of {info.path.name} "
                       f"to {width}×{height} px, too small to hold a face: use a resize factor of at most {most}")


def _check_crop(crop: Tuple[int, int, int, int], size: Size) -> None:
    """--crop y1 y2 x1 x2 must keep part of the frame (after --resize_factor and --rotate): start inside it and
    end after it starts (-1: at the edge); video.transformed_size refuses the rest (an end past the edge)."""
    if tuple(crop) == NO_CROP:
        return
    width, height = size
    y1, y2, x1, x2 = crop
    problem = ""
    if y1 >= height or x1 >= width:
        problem = f"it starts outside the frame: y1 must be below {height} and x1 below {width}"
    elif (y2 != EDGE and y2 <= y1) or (x2 != EDGE and x2 <= x1):
        problem = "it is empty or inverted: give y1 < y2 and x1 < x2 (or -1 for the edge)"
    if problem:
        raise LipSyncError(f"--crop {_words(crop)} does not fit the {width}×{height} px frame (after --resize_factor "
                           f"and --rotate): {problem}")


def check_pads(pads: Tuple[int, int, int, int], size: Size) -> None:
    """Pads that take away more than the whole frame leave no face box at all, whatever is detected."""
    width, height = size
    top, bottom, left, right = pads
    if top + bottom <= -height or left + right <= -width:
        raise LipSyncError(f"--pads {_words(pads)} take away more than the whole {width}×{height} px frame: "
                           f"negative pads shrink the face box, keep them small (or use 0)")


def check_padded(found: np.ndarray, padded: np.ndarray, pads: Tuple[int, int, int, int], source: str,
                 first: int = 0) -> None:  # fmt: skip
    """Face boxes (x1, y1, x2, y2) as found and after the pads, of frames `first` on: a box the pads made empty or
    inverted is the user's to fix, said before the generator takes it."""
    widths, heights = padded[:, 2] - padded[:, 0], padded[:, 3] - padded[:, 1]
    bad = np.flatnonzero((widths < MIN_BOX_SIDE) | (heights < MIN_BOX_SIDE))
    if len(bad) == 0:
        return
    row = int(bad[0])
    raise LipSyncError(f"--pads {_words(pads)} leave nothing of the face box {_span(found[row])} in frame "
                       f"{first + row} of {source} (after the pads: {_span(padded[row])}): make the negative pads "
                       "smaller (or use 0), or give the face position with --box y1 y2 x1 x2")


def _span(box: np.ndarray) -> str:
    x1, y1, x2, y2 = (int(v) for v in box)
    return f"y {y1}..{y2}, x {x1}..{x2}"


def _words(values: Tuple[int, ...]) -> str:
    return " ".join(str(v) for v in values)
