"""Pass 1 of a run: read the face input's frames once and find the face box in each (or take --box), keeping
the frames on disk when the output must loop over them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from . import faces, geometry, shots, video
from .boxfollow import BoxFollower
from .errors import LipSyncError
from .job import Job, source_frames
from .options import LipSyncOptions
from .types import STAGE_FACES, Box, Frame, Progress

FACES_REPORT_EVERY = 25  # frames between progress reports while reading and detecting
LOOP_MARGIN_FRAMES = 2  # cache frames for ping-pong when the video is within this of the audio's length


@dataclass
class FaceBoxes:
    """Face boxes per source frame, and the frames themselves when the output must loop over them."""

    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2; one row serves every frame of a still or a fixed --box
    cache: Optional[video.FrameCache] = None
    present: Optional[np.ndarray] = None  # per source frame, whether the face is in it (None: in every frame)

    def box(self, index: int) -> Optional[Box]:
        """The face box of a source frame; None when the face is not in it."""
        index = min(index, len(self.boxes) - 1)
        if self.present is not None and not self.present[index]:
            return None
        x1, y1, x2, y2 = self.boxes[index]
        return int(x1), int(y1), int(x2), int(y2)

    def absent_frames(self, job: Job) -> int:
        """How many output frames show no face (passed through unchanged)."""
        if self.present is None or job.still:
            return 0
        last = len(self.present) - 1
        sources = [video.pingpong_index(i, len(self.cache)) if self.cache is not None else min(i, last)
                   for i in range(job.frames)]  # fmt: skip
        return int(np.count_nonzero(~self.present[sources]))


def _needs_loop(job: Job) -> bool:
    """Whether the audio may outlast the video, so frames must be replayed forward and back."""
    known = job.info.frame_count
    return not job.still and (known is None or known < job.frames + LOOP_MARGIN_FRAMES)


def locate_faces(
    job: Job, options: LipSyncOptions, detect: Optional[faces.DetectFn], batch: int, tmp: Path, report: Progress
) -> FaceBoxes:
    """Pass 1: read the frames once, find a face box in each, keep the frames on disk if they must loop."""
    cache = video.FrameCache(tmp) if _needs_loop(job) else None
    fixed, follower = None, None
    if detect is None:  # a given --box, checked against the frame size when the job was prepared
        given = faces.fixed_box(options.box, job.size[::-1])  # type: ignore[arg-type]
        fixed = np.array([given])
        follower = BoxFollower(given, zoom=True, reacquire=True) if options.follow_box and not job.still else None
        if cache is None and follower is None:
            return FaceBoxes(fixed)
    try:
        tracked = _pass_frames(job, options, detect, follower, batch, cache, report)
    except BaseException:
        if cache is not None:
            cache.close()
        raise
    if tracked is None:
        return FaceBoxes(fixed, cache)  # type: ignore[arg-type]
    boxes, present = tracked
    return FaceBoxes(boxes, cache, None if present.all() else present)


def _pass_frames(job: Job, options: LipSyncOptions, detect: Optional[faces.DetectFn],
                 follower: Optional[BoxFollower], batch: int, cache: Optional[video.FrameCache],
                 report: Progress) -> Optional[Tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Read the frames, caching and/or finding the face in them (by a detector, or following the given box with
    --follow_box on a video); the boxes found and whether the face is in each frame (None for a box that stays
    put)."""
    tracker: Optional[faces.FaceTracker] = None
    following = _Following(follower) if follower is not None else None
    if detect is not None:
        every = 1 if job.still else options.detect_every
        tracker = faces.FaceTracker(detect, every, options.detect_max_side, batch, retry_larger=job.still,
                                    face_index=options.face_index)  # fmt: skip
    total = 1 if job.still else min(job.frames, job.info.frame_count or job.frames)
    shape: Tuple[int, ...] = ()
    with contextlib.closing(source_frames(job, options)) as frames:  # ffmpeg stops here, not when collected
        for index, frame in enumerate(_limit(frames, job.frames)):
            shape = frame.shape
            if cache is not None:
                cache.append(frame)
            if tracker is not None:
                tracker.push(frame)
            if following is not None:
                following.push(frame)
            if index % FACES_REPORT_EVERY == 0:
                report(STAGE_FACES, index, total)
    report(STAGE_FACES, total, total)
    if following is not None:
        return following.finish(job, options)
    return None if tracker is None else _finish_boxes(tracker, shape, job, options)


class _Following:
    """A given box followed through a video's frames (--follow_box): the box in each frame the face was found in,
    and the shots' cuts."""

    def __init__(self, follower: BoxFollower) -> None:
        self._follower = follower
        self._boxes: List[Optional[Box]] = []
        self._shots = shots.CutDetector()
        self._cuts: List[int] = []

    def push(self, frame: Frame) -> None:
        if self._shots.cut(frame):
            self._cuts.append(len(self._boxes))
        box = self._follower.push(frame)
        self._boxes.append(box if self._follower.found else None)

    def finish(self, job: Job, options: LipSyncOptions) -> Tuple[np.ndarray, np.ndarray]:
        """Boxes for every frame (smoothed over time within each stretch with the face, as detected boxes are) and
        whether the face is in each: not where it was lost for more than shots.MISSED_FRAMES frames in a row
        (those pass through unchanged); a shorter loss within a shot takes boxes between where it was seen."""
        if not self._boxes:
            raise LipSyncError(f"no frame could be read from {job.face.name}")
        absent = [box is None for box in self._boxes]
        present = ~np.array(shots.bridge_misses(absent, self._cuts), dtype=bool)
        boxes = faces.fill_gaps(self._boxes, job.face.name)
        return (shots.smooth_runs(boxes, present, self._cuts) if options.smooth else boxes), present


def _limit(frames: Iterator[Frame], count: int) -> Iterator[Frame]:
    for index, frame in enumerate(frames):
        if index >= count:
            return
        yield frame


def _finish_boxes(tracker: faces.FaceTracker, shape: Tuple[int, ...], job: Job,
                  options: LipSyncOptions) -> Tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Fill the frames between detections, add the pads, smooth over time within each stretch of frames with
    the face (boxes only: frames are gone); also whether the face is in each frame."""
    found = tracker.finish()
    if not found:
        raise LipSyncError(f"no frame could be read from {job.face.name}")
    boxes = faces.fill_gaps(found, job.face.name, _no_face_advice(options, shape, job.still))
    present = ~np.array(shots.bridge_misses(tracker.absent(), tracker.cuts), dtype=bool)
    padded = faces.apply_pads(boxes, options.pads, shape)
    geometry.check_padded(boxes, padded, options.pads, job.face.name)
    boxes = padded
    if options.smooth and not job.still:
        boxes = shots.smooth_runs(boxes, present, tracker.cuts)
    return boxes, present


def _no_face_advice(options: LipSyncOptions, shape: Tuple[int, ...], still: bool) -> str:
    """What to try when no face was found, given what was tried (a still was also searched larger)."""
    other = "--face_detector sfd (S3FD)" if options.face_detector == "haar" else "--face_detector haar"
    advice = f"try a clearer, front-facing picture, {other}, or give the face position with --box y1 y2 x1 x2"
    searched = options.detect_max_side * (faces.RETRY_SIDE_FACTOR if still else 1)
    if faces.detection_scale(shape, searched) < 1.0:
        advice += f"; a small face may need --detect_max_side 0 (frames were searched at {options.detect_max_side} px)"
    return advice
