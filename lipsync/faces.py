"""Face boxes per frame: one face followed through a video (detected in crops around it, re-found after it
was away), numbered faces for choosing who speaks, gaps, pads, smoothing."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from . import boxfollow, shots
# detectors, gaps and smoothing were split out of this module: their names stay importable from it
from .detectors import (Candidates, DetectFn, Detections, HaarDetector, S3FDDetector, Scored,  # noqa: F401
                        candidates_of)
from .errors import LipSyncError
from .follow import FOLLOW_RADIUS, REACQUIRE_RADIUS, FirstFaces, index_beyond, nearest
from .shots import NO_FACE_ADVICE, fill_gaps, smooth  # noqa: F401
from .types import Box, Frame

KEYFRAME_DRIFT = 0.08  # keyframe boxes further apart than this fraction of the face size: detect the frames between
ROI_SIDE = 160  # px: the square the detector looks at while it follows a face (a 640x360 frame is 9x the pixels)
ROI_CONTEXT = 2.5  # that square spans this many face sizes: room for the face to move between keyframes
ROI_EDGE_PX = 1  # a box this close to a side where the crop cut the frame is a face the cut may have clipped
COARSE_SIDE = 320  # px: whole frames are searched at this size first (a face found is then placed by a crop)
RETRY_SIDE_FACTOR = 2  # a still without a face found is searched again on a copy this much larger (small faces)


def detection_scale(shape: Tuple[int, ...], max_side: int) -> float:
    """Factor (≤ 1) that brings a frame's longest side down to max_side; 0 means no downscaling."""
    longest = max(shape[0], shape[1])
    if max_side <= 0 or longest <= max_side:
        return 1.0
    return max_side / longest


def downscale(frames: Sequence[Frame], scale: float) -> List[Frame]:
    """Resized copies for detection (area filter keeps small faces visible)."""
    if scale == 1.0:
        return list(frames)
    h, w = frames[0].shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]


def pad_to_square(frame: Frame, side: int) -> Frame:
    """The frame in the top-left corner of a black side×side square (no change when it does not fit, or side
    is 0): every whole-frame detection then has one input shape, whatever the video's aspect."""
    height, width = frame.shape[:2]
    if side <= 0 or height > side or width > side or (height, width) == (side, side):
        return frame
    square = np.zeros((side, side, 3), np.uint8)
    square[:height, :width] = frame
    return square


def map_back(box: Optional[Box], scale: float, shape: Tuple[int, ...]) -> Optional[Box]:
    """A box found on a downscaled copy, in full-frame pixels, clipped to the frame."""
    if box is None:
        return None
    h, w = shape[:2]
    x1, y1, x2, y2 = (int(round(v / scale)) for v in box)
    return _usable((max(0, x1), max(0, y1), min(w, x2), min(h, y2)))


def _usable(box: Box) -> Optional[Box]:
    """The box, or None when clipping to the frame left no room for a face crop."""
    return box if valid_box(box) else None


@dataclass(frozen=True)
class Crop:
    """Where a detector's input came from: its top-left corner in frame pixels and its px per frame px."""

    left: float
    top: float
    scale: float
    picture: Box  # where the frame's pixels lie in the crop (black beyond, where the crop ran past the frame)

    def to_frame(self, box: Optional[Box], shape: Tuple[int, ...]) -> Optional[Box]:
        """A box found in the crop, in frame pixels, clipped to the frame; None when the crop's edge cut it
        (a face partly outside the crop gives a box of only its visible part)."""
        if box is None or self._cut(box):
            return None
        h, w = shape[:2]
        x1, y1, x2, y2 = box
        mapped = (self.left + x1 / self.scale, self.top + y1 / self.scale,
                  self.left + x2 / self.scale, self.top + y2 / self.scale)  # fmt: skip
        x1, y1, x2, y2 = (int(round(v)) for v in mapped)
        return _usable((max(0, x1), max(0, y1), min(w, x2), min(h, y2)))

    def _cut(self, box: Box) -> bool:
        """Whether the box touches a side of the crop where the crop cut through the frame."""
        px1, py1, px2, py2 = self.picture
        x1, y1, x2, y2 = box
        margin = ROI_EDGE_PX
        return ((px1 == 0 and x1 <= margin) or (py1 == 0 and y1 <= margin)
                or (px2 == ROI_SIDE and x2 >= ROI_SIDE - margin) or (py2 == ROI_SIDE and y2 >= ROI_SIDE - margin))


def roi_crop(frame: Frame, box: Box) -> Tuple[Frame, Crop]:
    """A ROI_SIDE² patch centred on `box`, ROI_CONTEXT face sizes wide; black where it runs past the frame."""
    x1, y1, x2, y2 = box
    side = int(np.ceil(max(x2 - x1, y2 - y1, 1) * ROI_CONTEXT))
    left, top = (x1 + x2 - side) // 2, (y1 + y2 - side) // 2
    scale = ROI_SIDE / side
    h, w = frame.shape[:2]
    fx1, fy1, fx2, fy2 = max(0, left), max(0, top), min(w, left + side), min(h, top + side)
    px1, py1, px2, py2 = (int(round(v * scale)) for v in (fx1 - left, fy1 - top, fx2 - left, fy2 - top))
    patch = np.zeros((ROI_SIDE, ROI_SIDE, 3), np.uint8)
    if px2 > px1 and py2 > py1:
        shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        patch[py1:py2, px1:px2] = cv2.resize(frame[fy1:fy2, fx1:fx2], (px2 - px1, py2 - py1), interpolation=shrink)
    return patch, Crop(left, top, scale, (px1, py1, px2, py2))


class FaceTracker:
    """The boxes of one face through a stream of frames, detecting as little as the motion allows.

    Every `every`-th frame (and the last, and the frames on both sides of a scene cut) is a keyframe: the
    detector looks at a small crop around the face it follows (the whole frame, at COARSE_SIDE then at
    `max_side`, when it has none or the crop misses). Between two keyframes with the face, its pixels are followed
    from one keyframe's box to the next's (boxfollow.follow_between: a few ms a frame, against a detection's
    ~100 on a CPU), which gives the frames between their boxes. Where that fails (the face turned or was hidden)
    and the keyframes' boxes differ, the middle frame is detected and checked against linear motion, and halves
    that break it are checked the same way; where the face came or went, every frame is. The others stay None for
    fill_gaps, which interpolates, unless the face is away on both sides: then absent() says so. Of several faces,
    the one followed is the nearest to where it was; the first is the most confident, or the `face_index`-th from
    the left in the first frame with faces.
    """

    def __init__(self, detect: DetectFn, every: int, max_side: int, batch: int, retry_larger: bool = False,
                 face_index: Optional[int] = None):  # fmt: skip
        self.boxes: Detections = []
        self.cuts: List[int] = []  # frames that begin a new shot
        self.first_faces: Optional[FirstFaces] = None  # with a face_index, once faces were found
        self._candidates = candidates_of(detect)
        self._every, self._max_side, self._batch = max(1, every), max_side, max(1, batch)
        self._retry_larger = retry_larger  # a still: look again, larger, if no face was found
        self._face_index = face_index
        self._looked: List[bool] = []  # whether the detector looked at each frame
        self._between: List[Tuple[int, Frame]] = []  # frames since the last keyframe
        self._last_key: Optional[int] = None
        self._key_frame: Optional[Frame] = None  # the last keyframe, where following the face to the next starts
        self._track: Optional[Box] = None
        self._shots = shots.CutDetector()

    def push(self, frame: Frame) -> None:
        """Take the next frame (it is kept until the next keyframe only if it lies between two)."""
        index = len(self.boxes)
        self.boxes.append(None)
        self._looked.append(False)
        if self._shots.cut(frame):  # no box is interpolated across a cut: keyframes on both sides
            self.cuts.append(index)
            if self._between:
                self._keyframe(*self._between.pop())
            self._keyframe(index, frame)
        elif self._last_key is None or index - self._last_key >= self._every:
            self._keyframe(index, frame)
        else:
            self._between.append((index, frame))

    def finish(self) -> Detections:
        """Every frame's box (None: not detected, or no face); the last frame is always a keyframe."""
        if self._between:
            self._keyframe(*self._between.pop())
        return self.boxes

    @property
    def settled(self) -> int:
        """How many frames, from the first, have their boxes final: all up to the last keyframe (after finish: all).
        The frames since wait for the next keyframe, at most `every` frames on."""
        return 0 if self._last_key is None else self._last_key + 1

    def absent(self, start: int = 0, stop: Optional[int] = None) -> List[bool]:
        """Per frame of [start, stop) (settled ones: after finish, all): whether the followed face is not in it:
        looked at and not found, or between two frames where it was not."""
        stop = len(self.boxes) if stop is None else stop
        looked_before = [i for i in range(start - 1, max(start - 1 - self._every, -1), -1) if self._looked[i]]
        previous_away = self.boxes[looked_before[0]] is None if looked_before else True
        away = []
        for box, looked in zip(self.boxes[start:stop], self._looked[start:stop]):
            if looked:
                previous_away = box is None
            away.append(box is None and (looked or previous_away))
        return away

    def _set(self, index: int, box: Optional[Box]) -> None:
        self.boxes[index] = box
        self._looked[index] = True

    def _keyframe(self, index: int, frame: Frame) -> None:
        box = self._find(index, frame)
        self._set(index, box)
        if self._last_key is not None and self._between:
            self._between_keyframes(self._last_key, index, frame)
        self._between = []
        self._last_key, self._key_frame = index, frame
        self._track = box or self._track

    def _between_keyframes(self, first: int, last: int, frame: Frame) -> None:
        """Place the face in the frames between two keyframes (the last is `frame`): followed by its pixels, else
        by the detector where it moved; nothing to do when it stayed away."""
        before, after = self.boxes[first], self.boxes[last]
        if before is None and after is None:
            return  # no face on either side: a gap, not a move
        if before is None or after is None:
            self._refine(self._between, (before, after))  # the face came or went somewhere in between
            return
        assert self._key_frame is not None
        path = [self._key_frame, *(between for _, between in self._between), frame]
        followed = boxfollow.follow_between(path, before, after, KEYFRAME_DRIFT)
        if followed is not None:
            for (index, _), box in zip(self._between, followed):
                if valid_box(box):  # else (clipped to nothing at the frame's edge) left to fill_gaps
                    self._set(index, box)
        elif _moved(before, after):
            self._bisect(first, last, dict(self._between))

    def _bisect(self, first: int, last: int, frames: Dict[int, Frame]) -> None:
        """Detect the middle frame; if the face is where linear motion puts it, interpolation holds for the
        rest, else look at both halves the same way. Smooth motion costs one detection per stretch."""
        if last - first < 2:
            return
        middle = (first + last) // 2
        expected = _interpolate(self.boxes[first], self.boxes[last], (middle - first) / (last - first))
        found = self._in_crops([frames[middle]], expected)[0]
        self._set(middle, found)
        if found is None:  # lost in the middle: look at every frame
            self._refine([(i, frames[i]) for i in range(first + 1, last)], (self.boxes[first], self.boxes[last]))
        elif _moved(expected, found):
            self._bisect(first, middle, frames)
            self._bisect(middle, last, frames)

    def _find(self, index: int, frame: Frame) -> Optional[Box]:
        if self._track is None and self._face_index is not None:
            self._track = self._choose(index, frame)
            if self._track is None:
                return None
        if self._track is None:
            return self._in_whole([frame], None)[0]
        return self._in_crops([frame], self._track)[0] or self._in_whole([frame], self._track)[0]

    def _choose(self, index: int, frame: Frame) -> Optional[Box]:
        """The face_index-th face from the left in the first frame with faces (an error if it has fewer): this
        keyframe, or one of the frames since the last, which had none."""
        numbered = self._numbered(frame)
        if not numbered:
            return None
        for earlier, before in self._between:
            found = self._numbered(before)
            if found:
                index, numbered = earlier, found
                break
        self.first_faces = FirstFaces(index, tuple(numbered))
        if self._face_index >= len(numbered):  # type: ignore[operator]
            raise LipSyncError(index_beyond(self._face_index, len(numbered), index))  # type: ignore[arg-type]
        return numbered[self._face_index][0]  # type: ignore[index]

    def _numbered(self, frame: Frame) -> List[Scored]:
        """Every face of a frame, left to right: from the search size that finds the most (the coarser on a tie)."""
        most: List[Scored] = []
        for side in self._search_sides(frame.shape):
            found = self._downscaled([frame], side)[0]
            if len(found) > len(most):
                most = found
        return sorted(most, key=lambda face: face[0][0] + face[0][2])

    def _refine(self, items: Sequence[Tuple[int, Frame]], near: Sequence[Optional[Box]]) -> None:
        """Detect each of these (index, frame): near either keyframe's face, else in the whole frame."""
        frames = [frame for _, frame in items]
        known = [box for box in near if box is not None]
        found: Detections = [None] * len(frames)
        for around in known:
            self._fill(found, frames, lambda chosen, around=around: self._in_crops(chosen, around))
        self._fill(found, frames, lambda chosen: self._in_whole(chosen, known[0] if known else None))
        for (index, _), box in zip(items, found):
            self._set(index, box)

    @staticmethod
    def _fill(found: Detections, frames: Sequence[Frame], detect: DetectFn) -> None:
        """Detect the frames whose box is still None."""
        missing = [i for i, box in enumerate(found) if box is None]
        if not missing:
            return
        for i, box in zip(missing, detect([frames[i] for i in missing])):
            found[i] = box

    def _in_crops(self, frames: Sequence[Frame], around: Box) -> Detections:
        """The followed face in a crop around where it is expected: the nearest whole face found there."""
        if not frames:
            return []
        crops = [roi_crop(frame, around) for frame in frames]
        found = self._batched([patch for patch, _ in crops])
        mapped = [[(crop.to_frame(box, frame.shape), score) for box, score in faces]
                  for (_, crop), faces, frame in zip(crops, found, frames)]  # fmt: skip
        return [nearest([(b, s) for b, s in faces if b is not None], around, FOLLOW_RADIUS) for faces in mapped]

    def _in_whole(self, frames: Sequence[Frame], followed: Optional[Box]) -> Detections:
        """Search whole frames, coarse first (a face found there is then placed by a crop search, which sees
        it at the tracker's usual size); frames without the face are searched again at the next size."""
        found: Detections = [None] * len(frames)
        for side in self._search_sides(frames[0].shape) if frames else []:
            self._fill(found, frames, functools.partial(self._whole_at, side=side, followed=followed))
        for i, box in enumerate(found):
            if box is not None:
                found[i] = self._in_crops([frames[i]], box)[0] or box
        return found

    def _whole_at(self, frames: Sequence[Frame], side: int, followed: Optional[Box]) -> Detections:
        return [self._pick(faces, followed) for faces in self._downscaled(frames, side)]

    def _pick(self, faces: List[Scored], followed: Optional[Box]) -> Optional[Box]:
        """Of a whole frame's faces: the followed one (the nearest, if near where it was); else the most
        confident, unless a face_index chose who speaks: then that face is not in this frame."""
        if not faces:
            return None
        if followed is not None:
            near = nearest(faces, followed, REACQUIRE_RADIUS)
            if near is not None or self._face_index is not None:
                return near
        return faces[0][0]

    def _search_sides(self, shape: Tuple[int, ...]) -> List[int]:
        """Longest sides to search whole frames at, coarse to fine; each one that actually changes the size."""
        if self._max_side <= 0:
            return [0]
        sides = [min(COARSE_SIDE, self._max_side), self._max_side]
        if self._retry_larger:
            sides.append(RETRY_SIDE_FACTOR * self._max_side)
        kept: List[int] = []
        for side in sorted(set(sides)):
            if not kept or detection_scale(shape, side) > detection_scale(shape, kept[-1]):
                kept.append(side)
        return kept

    def _downscaled(self, frames: Sequence[Frame], max_side: int) -> Candidates:
        scale = detection_scale(frames[0].shape, max_side)
        small = [pad_to_square(frame, max_side) for frame in downscale(frames, scale)]
        mapped = [[(map_back(box, scale, frames[0].shape), score) for box, score in faces]
                  for faces in self._batched(small)]  # fmt: skip
        return [[(box, score) for box, score in faces if box is not None] for faces in mapped]

    def _batched(self, frames: Sequence[Frame]) -> Candidates:
        found: Candidates = []
        for start in range(0, len(frames), self._batch):
            found += self._candidates(frames[start : start + self._batch])
        return found


def _interpolate(a: Box, b: Box, t: float) -> Box:
    """The box a fraction t of the way from a to b."""
    x1, y1, x2, y2 = (int(round(p + (q - p) * t)) for p, q in zip(a, b))
    return (x1, y1, x2, y2)


def _moved(a: Optional[Box], b: Optional[Box]) -> bool:
    """Whether two keyframe boxes differ enough that interpolating between them could miss the face."""
    if a is None or b is None:
        return True
    size = max(a[2] - a[0], a[3] - a[1], 1)
    return max(abs(p - q) for p, q in zip(a, b)) > KEYFRAME_DRIFT * size


def apply_pads(boxes: np.ndarray, pads: Tuple[int, int, int, int], shape: Tuple[int, ...]) -> np.ndarray:
    """Grow (x1, y1, x2, y2) boxes by pads (top, bottom, left, right), clipped to the frame."""
    top, bottom, left, right = pads
    h, w = shape[:2]
    out = boxes.copy()
    out[:, 0] = np.maximum(0, boxes[:, 0] - left)
    out[:, 1] = np.maximum(0, boxes[:, 1] - top)
    out[:, 2] = np.minimum(w, boxes[:, 2] + right)
    out[:, 3] = np.minimum(h, boxes[:, 3] + bottom)
    return out


def fixed_box(box: Tuple[int, int, int, int], shape: Tuple[int, ...]) -> Box:
    """The user's --box (y1, y2, x1, x2) as an (x1, y1, x2, y2) box inside the frame."""
    y1, y2, x1, x2 = box
    h, w = shape[:2]
    x1, x2, y1, y2 = min(x1, w - 1), min(x2, w), min(y1, h - 1), min(y2, h)
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise LipSyncError(f"--box {' '.join(map(str, box))} lies outside the {w}×{h} px frame (its size after "
                           f"--resize_factor, --rotate and --crop): give y1 y2 x1 x2 with y1 at most {h - 2} "
                           f"and x1 at most {w - 2}")
    return (x1, y1, x2, y2)


def valid_box(box: Sequence[int]) -> bool:
    """Whether a box has room for a face crop."""
    return box[2] - box[0] >= 2 and box[3] - box[1] >= 2
