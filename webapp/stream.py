"""/lipsync_stream, the page's "Make it speak": the job of /lipsync (webapp.jobs) with its video handed to the
page's streaming player in one-second segments while it is encoded, then the complete mp4 to download.

A visitor who leaves (gradio closes the generator) stops the run at its next progress report; the request
folder goes when the run has ended, not before (the run writes into it), and nothing here waits for that."""

from __future__ import annotations

import functools
import inspect
import queue
import shutil
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import gradio as gr

from lipsync.segments import SEGMENT_SECONDS
from lipsync.types import STAGE_SYNC

from . import folders, jobs
from .jobs import Reporter
from .limits import Limits

SEGMENTS_FOLDER = "segments"  # in the request folder: where each segment waits for gradio to read it
WAIT_S = 0.1  # between looks at whether the run has ended, while no segment comes
# The player gets the first segments only once what is encoded plays through while the rest is made: a run slower
# than playback (a CPU Space at 720p) stalled it every second instead. Making r seconds of video a second, T seconds in
# all, playing from B encoded seconds never catches up with the encoder when B >= T (1 - r). r comes from the frames
# the run hands to the encoder (its "lip-syncing" progress: steady, where segments come in lumps of 0.8 and 1.5 s),
# taken this much slower, as a run's pace wavers
RATE_MARGIN = 0.85

Update = Tuple[Any, Any, Any, Any]  # the result video (a segment), the mp4 to download, the speech, the status


class Stopped(Exception):
    """The visitor left: raised into the run by its progress callback, which ends it."""


class Segments:
    """lipsync's segment sink: each finished segment is moved into `folder` and queued for the stream."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ready: "queue.SimpleQueue[Path]" = queue.SimpleQueue()
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, segment: Path) -> None:
        kept = self.folder / segment.name
        shutil.move(str(segment), kept)
        self.ready.put(kept)

    def until_done(self, run: Future) -> Iterator[Path]:
        """The segments as they come, until the run has ended and every one it made was taken."""
        while True:
            try:
                yield self.ready.get(timeout=WAIT_S)
            except queue.Empty:
                if run.done() and self.ready.empty():  # the run hands over its last segments before it ends
                    return


class Pacer:
    """When the page's player may have the segments held so far (RATE_MARGIN says when); once it may, it has each
    as it comes. Fed the run's progress (watching) and each segment's arrival; told the video's length (expect)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, segment_s: float = SEGMENT_SECONDS) -> None:
        self._clock, self.segment_s = clock, segment_s
        self.total_s = 0.0
        self._made: List[Tuple[float, float]] = []  # (when, share of the frames handed to the encoder)
        self._segments = 0
        self.playing = False

    def expect(self, total_s: float) -> None:
        """The video's length (its speech's), once known; 0: unknown, and nothing is held."""
        self.total_s = total_s

    def watching(self, report: Reporter) -> Reporter:
        """The progress callback `report`, also noting how fast the run makes frames."""

        def noted(stage: str, done: int, total: int) -> None:
            if stage == STAGE_SYNC and total > 0:
                self._made.append((self._clock(), done / total))
            report(stage, done, total)

        return noted

    def arrived(self) -> bool:
        """One more segment is encoded: whether the player may have every segment held, this one too."""
        self._segments += 1
        self.playing = self.playing or self._plays_through()
        return self.playing

    def _plays_through(self) -> bool:
        encoded = self._segments * self.segment_s
        if encoded >= self.total_s or (self._made and self._made[-1][1] >= 1):  # all of it, or every frame made:
            return True  # what is left is the encoder's short lag (a length unknown: 0, nothing held)
        if len(self._made) < 2:
            return False
        (first, share_then), (last, share_now) = self._made[0], self._made[-1]
        if last <= first:
            return True
        rate = RATE_MARGIN * self.total_s * (share_now - share_then) / (last - first)
        return encoded >= self.total_s * (1 - rate)


def paced(segments: Iterator[Path], pacer: Pacer) -> Iterator[Path]:
    """The segments, each held until `pacer` lets the player have it; those still held when the run ends, then."""
    held: List[Path] = []
    for segment in segments:
        held.append(segment)
        if pacer.arrived():
            yield from held
            held.clear()
    yield from held


def stoppable(report: Reporter, stop: threading.Event) -> Reporter:
    """The progress callback, raising Stopped into the run once `stop` is set."""

    def checked(stage: str, done: int, total: int) -> None:
        if stop.is_set():
            raise Stopped("the visitor left")
        report(stage, done, total)

    return checked


def download_button(path: Any = None) -> dict:
    """The "Download the mp4" button's update: shown with the finished file, hidden without one."""
    return gr.update(value=path, visible=path is not None)


@functools.wraps(jobs.make_video, assigned=())  # its parameters, under their names (the API's); our own doc
def make_video_stream(limits: Limits, *args: Any, **kwargs: Any) -> Iterator[Update]:
    """Make the face speak, yielding the video's segments as they are encoded, then the mp4 to download, the
    speech made from the text (if any) and the status line."""
    given = inspect.signature(jobs.make_video).bind(limits, *args, **kwargs)
    given.apply_defaults()
    form = jobs.Form(**{k: v for k, v in given.arguments.items() if k in jobs.FORM_FIELDS})
    stop, pacer = threading.Event(), Pacer()
    bar = jobs.progress_reporter(given.arguments["progress"], enhanced=bool(form.face_enhancement))
    report = stoppable(pacer.watching(bar), stop)
    job, segments, run = _start(limits, form, report)
    pacer.expect(job.speech_seconds)
    try:
        yield gr.skip(), download_button(), None, ""  # the last result's download and status go
        for segment in paced(segments.until_done(run), pacer):
            yield segment, gr.skip(), gr.skip(), gr.skip()
        with jobs.visitor_errors():
            video, speech, status = jobs.finished(job, run.result())
    finally:
        stop.set()  # when the visitor left: the run stops at its next progress report
        run.cancel()  # or never starts, if it still waits for a run thread
    yield gr.skip(), download_button(video), speech, status


def _start(limits: Limits, form: jobs.Form, report: Reporter) -> Tuple[jobs.Job, Segments, Future]:
    """A request folder, the request checked and its text spoken (as make_video does), and the run started; the
    folder is kept once the run succeeded, removed once it failed or stopped."""
    workdir = folders.requests.new()
    try:
        with jobs.visitor_errors():
            job = jobs.prepare(limits, form, workdir, report)
            segments = Segments(workdir / SEGMENTS_FOLDER)
            run = jobs.start_engine(job, report, segments)
    except BaseException:
        folders.requests.finish(workdir, keep=False)
        raise
    run.add_done_callback(lambda ended: folders.requests.finish(workdir, keep=_succeeded(ended)))
    return job, segments, run


def _succeeded(run: Future) -> bool:
    return not run.cancelled() and run.exception() is None
