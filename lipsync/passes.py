"""The frames pass 2 lip-syncs, in order, each with its face box: read again once pass 1 has found every box (two
decodes), or taken from pass 1 as it runs on a thread of its own (one decode).

Run together, pass 1 holds each frame until its box is final (lipsync.settle: a keyframe interval and a few frames
behind) and then hands it over, so the lip-sync pass starts within a second instead of after the whole video's
faces, the video is decoded once, and on a GPU the two passes' CPU work overlaps. Nothing is handed over before a
face was found: a video whose first face comes later than STREAM_HOLD_BYTES of frames, or without one (an error),
is run in two passes as before. Either way pass 2 gets the same frames with the same boxes.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Deque, Iterator, List, Optional, Tuple, Type

import numpy as np

from . import faces, settle, video
from .errors import LipSyncError
from .job import Job, source_frames
from .locate import FaceBoxes, FaceFinder, found_boxes, given_follower, locate_faces, needs_loop, read_into
from .options import LipSyncOptions
from .types import Box, Frame, Progress

OVERLAP_PASSES = True  # pass 1 on a thread of its own, pass 2 taking its frames (False: one after the other)
STREAM_HOLD_BYTES = 192 * 2**20  # frames pass 1 holds at most while their boxes settle: 69 of 720p, 30 of 1080p
STREAM_QUEUE_BYTES = 64 * 2**20  # frames with final boxes waiting for pass 2 at most (one at least)
THREAD_NAME = "lipsync-faces"

Pair = Tuple[Frame, Optional[Box]]  # an output frame and its face box (None: the face is not in it)


def streams(job: Job, options: LipSyncOptions, detect: Optional[faces.DetectFn]) -> bool:
    """Whether pass 1 runs alongside pass 2: a video whose boxes are found (a detector, or --follow_box), whose
    frames waiting for their boxes (a keyframe interval and settle.LAG) fit in STREAM_HOLD_BYTES."""
    if not OVERLAP_PASSES or job.still or (detect is None and not options.follow_box):
        return False  # a still, or a given box that stays put: no boxes to find
    every = options.detect_every if detect is not None else 1
    width, height = job.size
    return (every + settle.LAG + 1) * width * height * 3 <= STREAM_HOLD_BYTES


class TwoPasses:
    """Pass 1 over the whole video at once (locate_faces), then its frames read again (or replayed from its
    cache) for pass 2."""

    def __init__(self, job: Job, options: LipSyncOptions, detect: Optional[faces.DetectFn], batch: int, tmp: Path,
                 report: Progress) -> None:  # fmt: skip
        self._job, self._options = job, options
        self.found = locate_faces(job, options, detect, batch, tmp, report)

    def pairs(self) -> Iterator[Pair]:
        return replayed_pairs(self._job, self._options, self.found)

    def close(self) -> None:
        if self.found.cache is not None:
            self.found.cache.close()


def replayed_pairs(job: Job, options: LipSyncOptions, found: FaceBoxes, start: int = 0,
                   last: Optional[Frame] = None) -> Iterator[Pair]:  # fmt: skip
    """(frame, box) for output frames `start` on, pass 1 done: from its cache when the audio outlasts the video
    (which plays forward and back); else the video read again, or, from `start` > 0 (the frames pass 1 handed
    over), its last frame `last` held where the video ended before its probed length."""
    if found.cache is not None:
        for i in range(start, job.frames):
            src = video.pingpong_index(i, len(found.cache))
            yield found.cache[src], found.box(src)
        return
    frame = last
    with contextlib.closing(source_frames(job, options) if start == 0 else _no_frames()) as stream:
        for i in range(start, job.frames):
            frame = _next_frame(stream, frame, job)
            yield frame, found.box(0 if job.still else i)


def _no_frames() -> Iterator[Frame]:
    yield from ()


def _next_frame(stream: Iterator[Frame], last: Optional[Frame], job: Job) -> Frame:
    """The stream's next frame. A video shorter than its probed length repeats its last frame, as a copy: the
    one sent may still wait for the encoder while this one is pasted on (a still's frame is only copied from)."""
    frame = next(stream, None)
    if frame is not None:
        return frame
    if last is None:
        raise LipSyncError(f"no frame could be read from {job.face.name}")
    return last if job.still else last.copy()


class Streamed:
    """Pass 1 on a thread of its own; pairs() yields each frame once its box is final (see the module's doc).
    found is every frame's box once pairs() is exhausted."""

    def __init__(self, job: Job, options: LipSyncOptions, detect: Optional[faces.DetectFn], batch: int, tmp: Path,
                 report: Progress) -> None:  # fmt: skip
        self._job, self._options, self._report = job, options, report
        self._cache = video.FrameCache(tmp) if needs_loop(job) else None
        self._finder = FaceFinder(job, options, detect, given_follower(job, options), batch, self._cache)
        self._settler = self._finder.settler()
        self._held: Deque[Frame] = deque()  # read by pass 1, box not final yet (pass 1's thread only)
        self._boxes: List[np.ndarray] = []  # released boxes and presence, in order
        self._present: List[bool] = []
        self._ready: Deque[Pair] = deque()  # boxes final, waiting for pass 2
        self._ready_bytes = 0
        self._changed = threading.Condition()
        self._ended = self._stopping = False
        self._error: Optional[BaseException] = None
        self._two_passes = False  # no face within STREAM_HOLD_BYTES of frames: pass 2 reads the video again
        self.found: Optional[FaceBoxes] = None
        self._thread = threading.Thread(target=self._pass1, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def pairs(self) -> Iterator[Pair]:
        count, last = 0, None
        while True:
            pair = self._take()
            if pair is None:
                break
            count, last = count + 1, pair[0]
            yield pair
        assert self.found is not None
        yield from replayed_pairs(self._job, self._options, self.found, count, last)

    def close(self) -> None:
        """Stop pass 1 (if it still runs) and wait for it; drop the frames it holds; delete the cache."""
        with self._changed:
            self._stopping = True
            self._ready.clear()
            self._changed.notify_all()
        self._thread.join()
        self._held.clear()
        if self._cache is not None:
            self._cache.close()

    def _take(self) -> Optional[Pair]:
        """The next frame with its box, waiting for pass 1; None once pass 1 ended and all were taken."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self._ready) or self._ended)
            if self._error is not None:
                raise self._error
            if not self._ready:
                return None
            pair = self._ready.popleft()
            self._ready_bytes -= pair[0].nbytes
            self._changed.notify_all()
            return pair

    def _pass1(self) -> None:
        try:
            with contextlib.closing(read_into(self._finder, self._job, self._options, self._report)) as frames:
                for frame in frames:
                    if self._stopping:
                        break
                    self._hold(frame)
            if self._stopping:
                return
            self.found = self._finish()
        except BaseException as error:  # handed to pass 2's next take
            self._error = error
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _hold(self, frame: Frame) -> None:
        """Keep a frame pass 1 has taken until its box is final; hand over those whose boxes are."""
        if self._two_passes:
            return
        self._held.append(frame)
        self._hand_over(*self._finder.settle(self._settler))
        if not self._settler.released and len(self._held) * frame.nbytes > STREAM_HOLD_BYTES:
            self._two_passes = True  # no face yet: not worth holding more frames for
            self._held.clear()

    def _finish(self) -> FaceBoxes:
        if self._two_passes:
            tracked = self._finder.finish()
            assert tracked is not None
            return found_boxes(*tracked, self._cache)
        self._hand_over(*self._finder.settle(self._settler, end=True))
        return found_boxes(np.array(self._boxes, np.int64).reshape(-1, 4), np.array(self._present, bool), self._cache)

    def _hand_over(self, boxes: np.ndarray, present: np.ndarray) -> None:
        """The held frames whose boxes were released, to pass 2 (waiting while STREAM_QUEUE_BYTES wait for it)."""
        for box, here in zip(boxes, present):
            frame = self._held.popleft()
            self._boxes.append(box)
            self._present.append(here)
            pair = (frame, (int(box[0]), int(box[1]), int(box[2]), int(box[3])) if here else None)
            with self._changed:
                self._changed.wait_for(lambda: self._stopping or self._has_room(frame.nbytes))
                if self._stopping:
                    return
                self._ready.append(pair)
                self._ready_bytes += frame.nbytes
                self._changed.notify_all()

    def _has_room(self, size: int) -> bool:
        return not self._ready or self._ready_bytes + size <= STREAM_QUEUE_BYTES


def open_passes(job: Job, options: LipSyncOptions, detect: Optional[faces.DetectFn], batch: int, tmp: Path,
                report: Progress) -> "Passes":  # fmt: skip
    """The frames and boxes pass 2 takes: streamed from pass 1 where streams() allows, else after it."""
    kind = Streamed if streams(job, options, detect) else TwoPasses
    return Passes(kind(job, options, detect, batch, tmp, report))


class Passes:
    """pairs() for pass 2; found (every source frame's box) once they were all taken; a context manager that
    stops pass 1 and deletes its cache."""

    def __init__(self, inner: "TwoPasses | Streamed") -> None:
        self._inner = inner

    def pairs(self) -> Iterator[Pair]:
        return self._inner.pairs()

    @property
    def found(self) -> FaceBoxes:
        if self._inner.found is None:
            raise RuntimeError("the boxes are known once every frame was taken")
        return self._inner.found

    def __enter__(self) -> Passes:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:  # fmt: skip
        self._inner.close()
