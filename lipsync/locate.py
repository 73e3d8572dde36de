"""Pass 1 of a run: read the face input's frames once and find the face box in each (or take --box), keeping
the frames on disk when the output must loop over them."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import faces, geometry, settle, shots, video
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


def needs_loop(job: Job) -> bool:
    """Whether the audio may outlast the video, so frames must be replayed forward and back."""
    known = job.info.frame_count
    return not job.still and (known is None or known < job.frames + LOOP_MARGIN_FRAMES)


def locate_faces(
    job: Job, options: LipSyncOptions, detect: Optional[faces.DetectFn], batch: int, tmp: Path, report: Progress
) -> FaceBoxes:
    """Pass 1: read the frames once, find a face box in each, keep the frames on disk if they must loop."""
    cache = video.FrameCache(tmp) if needs_loop(job) else None
    fixed, follower = None, None
    if detect is None:  # a given --box, checked against the frame size when the job was prepared
        given = faces.fixed_box(options.box, job.size[::-1])  # type: ignore[arg-type]
        fixed = np.array([given])
        follower = given_follower(job, options)
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
    return found_boxes(*tracked, cache)


def found_boxes(boxes: np.ndarray, present: np.ndarray, cache: Optional[video.FrameCache]) -> FaceBoxes:
    """Every source frame's box and whether the face is in it, as pass 2 reads them."""
    return FaceBoxes(boxes, cache, None if present.all() else present)


def given_follower(job: Job, options: LipSyncOptions) -> Optional[BoxFollower]:
    """What follows the given --box through a video's frames with --follow_box; None when it stays put."""
    if not options.follow_box or job.still or options.box is None:
        return None
    return BoxFollower(faces.fixed_box(options.box, job.size[::-1]), zoom=True, reacquire=True)  # type: ignore


def _pass_frames(job: Job, options: LipSyncOptions, detect: Optional[faces.DetectFn],
                 follower: Optional[BoxFollower], batch: int, cache: Optional[video.FrameCache],
                 report: Progress) -> Optional[Tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Read the frames, caching and/or finding the face in them (by a detector, or following the given box with
    --follow_box on a video); the boxes found and whether the face is in each frame (None for a box that stays
    put)."""
    finder = FaceFinder(job, options, detect, follower, batch, cache)
    with contextlib.closing(read_into(finder, job, options, report)) as frames:
        for _ in frames:
            pass
    return finder.finish()


def read_into(finder: FaceFinder, job: Job, options: LipSyncOptions, report: Progress) -> Iterator[Frame]:
    """Pass 1's reading: each frame (at most the job's frames) pushed into `finder`, then yielded, with progress.
    Close it to stop early: its ffmpeg stops then, not when collected."""
    total = 1 if job.still else min(job.frames, job.info.frame_count or job.frames)  # as far as the probe knows
    with contextlib.closing(source_frames(job, options)) as frames:
        for index, frame in enumerate(_limit(frames, job.frames)):
            finder.push(frame)
            if index % FACES_REPORT_EVERY == 0:
                report(STAGE_FACES, index, total)
            yield frame
    report(STAGE_FACES, total, total)


class FaceFinder:
    """Pass 1's work on each frame, in order: keep it in the cache (when the output loops), find the face in it
    (a detector) or follow the given box (--follow_box). finish() gives every frame's box; a Settler, fed by
    settle(), gives them a few frames behind instead (lipsync.settle)."""

    def __init__(self, job: Job, options: LipSyncOptions, detect: Optional[faces.DetectFn],
                 follower: Optional[BoxFollower], batch: int, cache: Optional[video.FrameCache]) -> None:  # fmt: skip
        self._job, self._options, self._cache = job, options, cache
        self._shape: Tuple[int, ...] = ()
        self._tracker: Optional[faces.FaceTracker] = None
        self._following = _Following(follower) if follower is not None else None
        if detect is not None:
            every = 1 if job.still else options.detect_every
            self._tracker = faces.FaceTracker(detect, every, options.detect_max_side, batch, retry_larger=job.still,
                                              face_index=options.face_index)  # fmt: skip

    def push(self, frame: Frame) -> None:
        self._shape = frame.shape
        if self._cache is not None:
            self._cache.append(frame)
        if self._tracker is not None:
            self._tracker.push(frame)
        if self._following is not None:
            self._following.push(frame)

    def finish(self) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """After the last frame: every frame's box and whether the face is in it (None: no boxes are found)."""
        if self._tracker is None and self._following is None:
            return None
        self._read_all()
        return self._finisher()(*self._tracked(), 0, 0)

    def settler(self) -> settle.Settler:
        """A Settler for this finder's boxes (one that finds them)."""
        reach = 1 if self._tracker is None else self._options.detect_every
        return settle.Settler(lambda *window: self._finisher()(*window), reach)

    def settle(self, settler: settle.Settler, end: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Hand the frames settled since the last call to `settler` (`end`: after the last frame, which settles
        them all); the boxes and presence it releases."""
        if end:
            self._read_all()
        found, absent, cuts = self._tracked(settler.settled)
        settler.add(found, absent)
        return settler.release(cuts, end)

    def _read_all(self) -> None:
        """After the last frame: the tracker places the frames since its last keyframe; no frame is an error."""
        read = self._tracker.finish() if self._tracker is not None else self._following.boxes  # type: ignore
        if not read:
            raise LipSyncError(f"no frame could be read from {self._job.face.name}")

    def _tracked(self, start: int = 0) -> Tuple[Sequence[Optional[Box]], List[bool], List[int]]:
        """The settled frames from `start` on: each one's box found (None: not found) and whether the face is away
        in it; and the shots' cuts so far."""
        if self._tracker is not None:
            stop = self._tracker.settled
            return self._tracker.boxes[start:stop], self._tracker.absent(start, stop), self._tracker.cuts
        assert self._following is not None
        found = self._following.boxes[start:]
        return found, [box is None for box in found], self._following.cuts

    def _finisher(self) -> settle.Finish:
        if self._following is not None:
            return functools.partial(_followed, self._job, self._options)
        advice = _no_face_advice(self._options, self._shape, self._job.still)
        return functools.partial(_detected, self._job, self._options, self._shape, advice)


class _Following:
    """A given box followed through a video's frames (--follow_box): the box in each frame the face was found in,
    and the shots' cuts."""

    def __init__(self, follower: BoxFollower) -> None:
        self._follower = follower
        self.boxes: List[Optional[Box]] = []
        self._shots = shots.CutDetector()
        self.cuts: List[int] = []

    def push(self, frame: Frame) -> None:
        if self._shots.cut(frame):
            self.cuts.append(len(self.boxes))
        box = self._follower.push(frame)
        self.boxes.append(box if self._follower.found else None)


def _followed(job: Job, options: LipSyncOptions, found: Sequence[Optional[Box]], absent: Sequence[bool],
              cuts: Sequence[int], first: int, check_from: int) -> Tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Followed boxes for every frame (smoothed over time within each stretch with the face, as detected boxes are)
    and whether the face is in each: not where it was lost for more than shots.MISSED_FRAMES frames in a row (those
    pass through unchanged); a shorter loss within a shot takes boxes between where it was seen. (A settle.Finish.)"""
    present = ~np.array(shots.bridge_misses(absent, cuts), dtype=bool)
    boxes = faces.fill_gaps(found, job.face.name)
    return (shots.smooth_runs(boxes, present, cuts) if options.smooth else boxes), present


def _limit(frames: Iterator[Frame], count: int) -> Iterator[Frame]:
    for index, frame in enumerate(frames):
        if index >= count:
            return
        yield frame


def _detected(job: Job, options: LipSyncOptions, shape: Tuple[int, ...], advice: str,
              found: Sequence[Optional[Box]], absent: Sequence[bool], cuts: Sequence[int], first: int,
              check_from: int) -> Tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Fill the frames between detections, add the pads, smooth over time within each stretch of frames with
    the face (boxes only: frames are gone); also whether the face is in each frame. (A settle.Finish.)"""
    boxes = faces.fill_gaps(found, job.face.name, advice)
    present = ~np.array(shots.bridge_misses(absent, cuts), dtype=bool)
    padded = faces.apply_pads(boxes, options.pads, shape)
    geometry.check_padded(boxes[check_from:], padded[check_from:], options.pads, job.face.name, first + check_from)
    if options.smooth and not job.still:
        padded = shots.smooth_runs(padded, present, cuts)
    return padded, present


def _no_face_advice(options: LipSyncOptions, shape: Tuple[int, ...], still: bool) -> str:
    """What to try when no face was found, given what was tried (a still was also searched larger)."""
    other = "--face_detector sfd (S3FD)" if options.face_detector == "haar" else "--face_detector haar"
    advice = f"try a clearer, front-facing picture, {other}, or give the face position with --box y1 y2 x1 x2"
    searched = options.detect_max_side * (faces.RETRY_SIDE_FACTOR if still else 1)
    if faces.detection_scale(shape, searched) < 1.0:
        advice += f"; a small face may need --detect_max_side 0 (frames were searched at {options.detect_max_side} px)"
    return advice
