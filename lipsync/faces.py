"""Face boxes per frame: detectors (S3FD, OpenCV Haar), downscaled batched detection, gaps, pads, smoothing."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .errors import LipSyncError
from .types import Box, Frame

SMOOTH_WINDOW = 5  # boxes averaged per frame, as the reference does
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_STEP = 1.1
HAAR_MIN_NEIGHBOURS = 5
HAAR_MIN_FACE = 24  # px on the detection copy
# Haar boxes run from the brows to the lower lip; S3FD's (what Wav2Lip was trained on) reach the chin.
HAAR_TO_S3FD = (0.0, 0.08, 0.0, 0.18)  # grow (left, top, right, bottom) by these fractions of the box size
KEYFRAME_DRIFT = 0.08  # keyframe boxes further apart than this fraction of the face size: detect the frames between
ROI_SIDE = 160  # px: the square the detector looks at while it follows a face (a 640x360 frame is 9x the pixels)
ROI_CONTEXT = 2.5  # that square spans this many face sizes: room for the face to move between keyframes
ROI_EDGE_PX = 1  # a box this close to a side where the crop cut the frame is a face the cut may have clipped
COARSE_SIDE = 320  # px: whole frames are searched at this size first (a face found is then placed by a crop)
RETRY_SIDE_FACTOR = 2  # a still without a face found is searched again on a copy this much larger (small faces)

Detections = List[Optional[Box]]
DetectFn = Callable[[Sequence[Frame]], Detections]


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


class S3FDDetector:
    """S3FD through a predictor: the highest-scoring face per frame (boxes in the given frames' pixels)."""

    def __init__(self, run: Callable[[np.ndarray], List[np.ndarray]]):
        self._run = run

    def __call__(self, frames: Sequence[Frame]) -> Detections:
        from . import s3fd

        found = s3fd.decode(self._run(s3fd.preprocess(frames)))
        return [_best(dets) for dets in found]


def _best(dets: np.ndarray) -> Optional[Box]:
    if len(dets) == 0:
        return None
    x1, y1, x2, y2 = (int(v) for v in np.maximum(dets[0, :4], 0))
    return (x1, y1, x2, y2)


class HaarDetector:
    """OpenCV's Haar cascade (ships with opencv): no download; the most confident face, box stretched to the chin."""

    def __init__(self) -> None:
        path = Path(cv2.data.haarcascades) / HAAR_CASCADE
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise LipSyncError(f"OpenCV's face cascade is missing ({path}); reinstall opencv-python-headless")
        self._lock = threading.Lock()  # one cascade object is not safe to share between threads

    def __call__(self, frames: Sequence[Frame]) -> Detections:
        with self._lock:
            return [self._detect(f) for f in frames]

    def _detect(self, frame: Frame) -> Optional[Box]:
        grey = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        found, votes = self._cascade.detectMultiScale2(
            grey, HAAR_SCALE_STEP, HAAR_MIN_NEIGHBOURS, minSize=(HAAR_MIN_FACE, HAAR_MIN_FACE)
        )
        if len(found) == 0:
            return None
        # the most confident box (most overlapping hits; false positives get few), the larger on a tie
        x, y, w, h = max(zip(found, votes), key=lambda hit: (hit[1], hit[0][2] * hit[0][3]))[0]
        left, top, right, bottom = HAAR_TO_S3FD
        box = (x - left * w, y - top * h, x + w + right * w, y + h + bottom * h)
        height, width = frame.shape[:2]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        return (max(0, x1), max(0, y1), min(width, x2), min(height, y2))


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
    """Face boxes for a stream of frames, detecting as little as the motion allows.

    Every `every`-th frame (and the last) is a keyframe: the detector looks at a small crop around the face it
    found last (the whole frame, at COARSE_SIDE then at `max_side`, when it has none or the crop misses). Between two
    keyframes whose boxes differ, the middle frame is checked against linear motion, and halves that break it
    are checked the same way; where the face came or went, every frame is. The others stay None for fill_gaps,
    which interpolates. The crop keeps one face across frames even when the picture holds several.
    """

    def __init__(self, detect: DetectFn, every: int, max_side: int, batch: int, retry_larger: bool = False):
        self.boxes: Detections = []
        self._detect, self._every, self._max_side, self._batch = detect, max(1, every), max_side, max(1, batch)
        self._retry_larger = retry_larger  # a still: look again, larger, if no face was found
        self._between: List[Tuple[int, Frame]] = []  # frames since the last keyframe
        self._last_key: Optional[int] = None
        self._track: Optional[Box] = None

    def push(self, frame: Frame) -> None:
        """Take the next frame (it is kept until the next keyframe only if it lies between two)."""
        index = len(self.boxes)
        self.boxes.append(None)
        if index % self._every == 0:
            self._keyframe(index, frame)
        else:
            self._between.append((index, frame))

    def finish(self) -> Detections:
        """Every frame's box (None: not detected or no face); the last frame is always a keyframe."""
        if self._between:
            self._keyframe(*self._between.pop())
        return self.boxes

    def _keyframe(self, index: int, frame: Frame) -> None:
        box = self._find(frame)
        self.boxes[index] = box
        if self._last_key is not None and self._between:
            self._between_keyframes(self._last_key, index)
        self._between = []
        self._last_key = index
        self._track = box or self._track

    def _between_keyframes(self, first: int, last: int) -> None:
        """Check the frames between two keyframes: nothing to do when the face held still (or stayed away)."""
        before, after = self.boxes[first], self.boxes[last]
        if before is None and after is None:
            return  # no face on either side: a gap, not a move
        if before is None or after is None:
            self._refine(self._between, (before, after))  # the face came or went somewhere in between
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
        self.boxes[middle] = found
        if found is None:  # lost in the middle: look at every frame
            self._refine([(i, frames[i]) for i in range(first + 1, last)], (self.boxes[first], self.boxes[last]))
        elif _moved(expected, found):
            self._bisect(first, middle, frames)
            self._bisect(middle, last, frames)

    def _find(self, frame: Frame) -> Optional[Box]:
        near = self._in_crops([frame], self._track)[0] if self._track is not None else None
        return near or self._in_whole([frame])[0]

    def _refine(self, items: Sequence[Tuple[int, Frame]], near: Sequence[Optional[Box]]) -> None:
        """Detect each of these (index, frame): near either keyframe's face, else in the whole frame."""
        frames = [frame for _, frame in items]
        found: Detections = [None] * len(frames)
        for around in [box for box in near if box is not None]:
            self._fill(found, frames, lambda chosen, around=around: self._in_crops(chosen, around))
        self._fill(found, frames, self._in_whole)
        for (index, _), box in zip(items, found):
            self.boxes[index] = box

    @staticmethod
    def _fill(found: Detections, frames: Sequence[Frame], detect: DetectFn) -> None:
        """Detect the frames whose box is still None."""
        missing = [i for i, box in enumerate(found) if box is None]
        if not missing:
            return
        for i, box in zip(missing, detect([frames[i] for i in missing])):
            found[i] = box

    def _in_crops(self, frames: Sequence[Frame], around: Box) -> Detections:
        if not frames:
            return []
        crops = [roi_crop(frame, around) for frame in frames]
        found = self._batched([patch for patch, _ in crops])
        return [crop.to_frame(box, frame.shape) for (_, crop), box, frame in zip(crops, found, frames)]

    def _in_whole(self, frames: Sequence[Frame]) -> Detections:
        """Search whole frames, coarse first (a face found there is then placed by a crop search, which sees
        it at the tracker's usual size); frames without a face are searched again at the next size."""
        found: Detections = [None] * len(frames)
        for side in self._search_sides(frames[0].shape) if frames else []:
            self._fill(found, frames, lambda chosen, side=side: self._downscaled(chosen, side))
        for i, box in enumerate(found):
            if box is not None:
                found[i] = self._in_crops([frames[i]], box)[0] or box
        return found

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

    def _downscaled(self, frames: Sequence[Frame], max_side: int) -> Detections:
        scale = detection_scale(frames[0].shape, max_side)
        small = [pad_to_square(frame, max_side) for frame in downscale(frames, scale)]
        return [map_back(box, scale, frames[0].shape) for box in self._batched(small)]

    def _batched(self, frames: Sequence[Frame]) -> Detections:
        found: Detections = []
        for start in range(0, len(frames), self._batch):
            found += self._detect(frames[start : start + self._batch])
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


NO_FACE_ADVICE = "try a clearer, front-facing picture, --face_detector haar, or give the face position with --box y1 y2 x1 x2"


def fill_gaps(boxes: Detections, source: str, advice: str = NO_FACE_ADVICE) -> np.ndarray:
    """Frames without a face take a box interpolated between the nearest frames that have one."""
    found = [i for i, b in enumerate(boxes) if b is not None]
    if not found:
        raise LipSyncError(f"No face found in any frame of {source} — {advice}")
    known = np.array([boxes[i] for i in found], dtype=np.float64)
    index = np.arange(len(boxes))
    filled = np.stack([np.interp(index, found, known[:, k]) for k in range(4)], axis=1)
    return np.round(filled).astype(np.int64)


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
