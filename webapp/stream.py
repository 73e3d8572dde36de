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
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Iterator, Tuple

import gradio as gr

from . import folders, jobs
from .jobs import Reporter
from .limits import Limits

SEGMENTS_FOLDER = "segments"  # in the request folder: where each segment waits for gradio to read it
WAIT_S = 0.1  # between looks at whether the run has ended, while no segment comes

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
    stop = threading.Event()
    report = stoppable(jobs.progress_reporter(given.arguments["progress"], enhanced=bool(form.face_enhancement)),
                       stop)  # fmt: skip
    job, segments, run = _start(limits, form, report)
    try:
        yield gr.skip(), download_button(), None, ""  # the last result's download and status go
        for segment in segments.until_done(run):
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
