"""The endpoints' work: make_video (/lipsync) and preview_speech (/speak), each in its own request folder,
with the visitor's mistakes and anything unexpected turned into a message on the page (gr.Error)."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

import gradio as gr

import lipsync
from lipsync import precision, tts
from lipsync.errors import LipSyncError, first_line
from lipsync.options import DEFAULT_PADS, LipSyncOptions
from lipsync.segments import SegmentSink
from lipsync.types import (STAGE_AUDIO, STAGE_ENCODE, STAGE_ENHANCE, STAGE_FACES, STAGE_LOAD, STAGE_SPEECH,
                           STAGE_SYNC)

from . import folders
from .form import plain
from .limits import (Limits, Measured, check_enhanced_seconds, check_length, check_seconds, check_text, measure,
                     with_sound_length)

log = logging.getLogger("lipsync.app")

OUTPUT_NAME = "lipsync.mp4"
ENHANCE_NOTE_FRAMES = 250  # 10 s at 25 fps, the unit the checkbox's cost is told in
DEFAULTS = LipSyncOptions()
STAGES = {  # engine stage → share of the progress bar (start, end)
    STAGE_SPEECH: (0.0, 0.05),
    STAGE_AUDIO: (0.05, 0.08),
    STAGE_LOAD: (0.08, 0.15),
    STAGE_FACES: (0.15, 0.3),
    STAGE_SYNC: (0.3, 0.95),
    STAGE_ENCODE: (0.95, 1.0),
}
# With face enhancement on, GPEN takes most of the time: it gets most of the bar. Lip-syncing and enhancing are
# reported in turn after each batch, so the bar only moves forward (see progress_reporter).
ENHANCED_STAGES = {**{s: STAGES[s] for s in (STAGE_SPEECH, STAGE_AUDIO, STAGE_LOAD, STAGE_FACES)},
                   STAGE_SYNC: (0.3, 0.4), STAGE_ENHANCE: (0.4, 0.95), STAGE_ENCODE: STAGES[STAGE_ENCODE]}
HAAR_NOTE = "OpenCV's Haar detector found the faces"  # in the engine's note when S3FD had no weights
SPOKEN_OFFLINE = "Spoken offline by espeak-ng"
OWN_SOUND = "No voice given: the video speaks its own sound, its lips redrawn to follow it."

RUN_THREAD_PREFIX = "lipsync-run"
# lipsync runs execute on these threads, which live as long as the process, not on gradio's worker threads:
# gradio frees a cancelled job's concurrency slot at once, but its thread cannot be stopped and runs on, so the
# next job would run beside it; here it waits for a run thread, as many as the queue's limit. (Paddle Inference's
# per-thread state is the engine's concern: each predictor runs on a thread of its own, see runtime.Predictor.)
_runner = ThreadPoolExecutor(1, thread_name_prefix=RUN_THREAD_PREFIX)
SPEECHES_AT_ONCE = 2  # texts spoken at once (a call to the edge-tts service, or espeak-ng): light, but bounded too
_speech_slots = threading.BoundedSemaphore(SPEECHES_AT_ONCE)  # held also by a cancelled preview's thread

Result = Tuple[str, Optional[str], str]  # make_video's: the video, the speech made from the text, the status line
Reporter = Callable[[str, int, int], None]  # the engine's progress callback: (stage, done, total)


def parse_box(text: str) -> Optional[Tuple[int, int, int, int]]:
    """'y1 y2 x1 x2' (spaces or commas) → a box; empty → None (detect the face)."""
    parts = text.replace(",", " ").split()
    if not parts:
        return None
    try:
        numbers = tuple(int(p) for p in parts)
    except ValueError:
        numbers = ()
    if len(numbers) != 4:
        raise LipSyncError(f"The face box takes four whole numbers, y1 y2 x1 x2 (top bottom left right): {text!r}")
    return numbers  # type: ignore[return-value]


def progress_reporter(progress: Callable[..., object], enhanced: bool = False) -> Reporter:
    """The engine's (stage, done, total) callback drawn as one bar across all stages, never moving back: a video's
    faces are still being found while its first frames are lip-synced, and the bar then tells the later stage."""
    stages = ENHANCED_STAGES if enhanced else STAGES
    order = list(stages)
    reached, latest = [0.0], [0]

    def report(stage: str, done: int, total: int) -> None:
        if stage in stages:
            if order.index(stage) < latest[0]:
                return
            latest[0] = order.index(stage)
        start, end = stages.get(stage, (0.0, 1.0))
        share = min(done / total, 1.0) if total > 0 else 0.0
        counts = f" {done}/{total}" if total > 1 else ""
        reached[0] = max(reached[0], start + (end - start) * share)
        progress(reached[0], desc=f"{stage}{counts}")

    return report


def no_progress(*args: object, **kwargs: object) -> None:
    return None


def one_face(face_image: Optional[str], face_video: Optional[str], limits: Limits) -> Tuple[str, Optional[Measured]]:
    """The face to animate: the picture or the video given (exactly one); a video's measure."""
    if face_image and face_video:
        raise LipSyncError("Give one face: a picture or a video, not both.")
    if not (face_image or face_video):
        raise LipSyncError("Give a face: upload a picture or a video (or use the webcam).")
    if face_video:
        return face_video, check_seconds(face_video, "face video", limits, require_video=True)
    return face_image, None  # type: ignore[return-value]


@dataclass(frozen=True)
class Voice:
    """The speech to lip-sync: its file, how long it lasts, and what spoke it when it was made from text."""

    path: str
    seconds: float
    spoken: Optional[tts.Speech] = None


def speech_for(
    audio: Optional[str], text: Optional[str], voice: str, rate: float, workdir: Path, limits: Limits, report: Reporter,
    face_video: Optional[str] = None, face_measured: Optional[Measured] = None,
) -> Voice:
    """The speech to lip-sync: the audio given, the text spoken by edge-tts (espeak-ng offline), or with neither
    the face video's own sound (its lips then follow it: a dubbed video re-synced). Each file is probed once:
    `face_measured` is the face video's measure, when the caller has it."""
    text = text or ""
    if audio and text.strip():
        raise LipSyncError("Give the voice as an audio file or as text, not both.")
    if audio:
        return Voice(audio, check_seconds(audio, "audio", limits, as_speech=True).sound_seconds)
    if not text.strip():
        return _own_sound(face_video, face_measured, limits)
    check_text(text, limits)
    report(STAGE_SPEECH, 0, 1)
    with _speech_slots:
        speech = tts.speak(text, workdir, voice or tts.DEFAULT_VOICE, int(rate or 0))
    report(STAGE_SPEECH, 1, 1)
    if speech.fallback_reason:
        gr.Warning(plain(f"{SPOKEN_OFFLINE}: {speech.fallback_reason}."))
    measured = check_seconds(speech.path, "speech made from your text", limits, as_speech=True)
    return Voice(str(speech.path), measured.sound_seconds, speech)


def _own_sound(face_video: Optional[str], measured: Optional[Measured], limits: Limits) -> Voice:
    """No voice given: a face video with sound speaks that, held to the app's length as any speech is."""
    if face_video and measured is None:
        measured = measure(face_video, require_video=True)
    if not face_video or not measured or not measured.has_audio:
        raise LipSyncError("Give a voice: upload or record audio, or type a text to speak (a video with sound "
                           "speaks its own when no voice is given).")
    seconds = with_sound_length(face_video, measured).sound_seconds
    check_length(seconds, "face video's sound", limits)
    gr.Info(OWN_SOUND)
    return Voice(face_video, seconds)


def options_from_form(model, pads, resize_factor, smooth, static, fps, box, blend, detector, device,
                      face_enhancement=False, face_index=None, video=False) -> LipSyncOptions:  # fmt: skip
    """The engine's options from the form's values; a face box given for a video follows the face it frames (the
    page's clicks set it on the first frame)."""
    fixed = parse_box(box or "")
    return LipSyncOptions(
        checkpoint=model or DEFAULTS.checkpoint,
        pads=tuple(int(p or 0) for p in pads),  # type: ignore[arg-type]
        resize_factor=int(resize_factor or 1),
        smooth=bool(smooth),
        static=bool(static),
        fps=float(fps or DEFAULTS.fps),
        box=fixed,
        follow_box=bool(video) and fixed is not None,
        blend=blend or DEFAULTS.blend,
        face_detector=detector or DEFAULTS.face_detector,
        device=device or DEFAULTS.device,
        face_enhancement=bool(face_enhancement),
        face_index=whole_number(face_index, "face_index"),
    )


def whole_number(value: Optional[float], name: str) -> Optional[int]:
    """A form's or API caller's number as an int (None stays None); 1.5 is an error, not 1."""
    if value is None or value == "":
        return None
    if float(value) != int(float(value)):
        raise LipSyncError(f"{name} must be a whole number (got {value})")
    return int(float(value))


def status_line(result: "lipsync.RunResult", options: LipSyncOptions, speech: Optional[tts.Speech]) -> str:
    """What ran, in one line: model, device, precision, paddle, frames, time, detector, voice."""
    line = (
        f"{result.model} on {result.device} · {result.precision} · paddle {result.paddle} · {result.frames} frames at "
        f"{result.fps:g} fps · {result.seconds:.1f} s · faces: {faces_found_by(result, options)}"
    )
    if options.face_index is not None:
        line += f", face {options.face_index} from the left"
    if result.frames_without_face:
        line += f" · {result.frames_without_face} of {result.frames} frames had no face (left unchanged)"
    if speech is not None:
        line += f" · voice: {speech.engine} {speech.voice}"
    return line


def faces_found_by(result: "lipsync.RunResult", options: LipSyncOptions) -> str:
    """The detector that ran: the one asked for, unless the engine said Haar stood in for S3FD."""
    if options.box:
        return "box followed from the first frame" if options.follow_box else "fixed box"
    if any(HAAR_NOTE in note for note in result.notes):
        return "haar"
    return options.face_detector


def make_video(
    limits: Limits,
    face_image: Optional[str] = None,
    face_video: Optional[str] = None,
    audio: Optional[str] = None,
    text: Optional[str] = None,
    voice: str = tts.DEFAULT_VOICE,
    rate: float = 0,
    model: str = DEFAULTS.checkpoint,
    pad_top: float = DEFAULT_PADS[0],
    pad_bottom: float = DEFAULT_PADS[1],
    pad_left: float = DEFAULT_PADS[2],
    pad_right: float = DEFAULT_PADS[3],
    resize_factor: float = DEFAULTS.resize_factor,
    smooth: bool = DEFAULTS.smooth,
    static: bool = DEFAULTS.static,
    fps: float = DEFAULTS.fps,
    box: Optional[str] = None,
    blend: str = DEFAULTS.blend,
    detector: str = DEFAULTS.face_detector,
    device: str = DEFAULTS.device,
    face_enhancement: bool = DEFAULTS.face_enhancement,
    face_index: Optional[float] = None,
    progress=gr.Progress(track_tqdm=True),  # tqdm too: a first run's weights download shows its bar
) -> Result:
    """Make the face speak: returns the video, the speech made from the text (if any) and a status line."""
    form = Form(**{name: value for name, value in locals().items() if name in FORM_FIELDS})  # the parameters above
    report = progress_reporter(progress, enhanced=bool(face_enhancement))
    with request_folder() as workdir:
        job = prepare(limits, form, workdir, report)
        return finished(job, start_engine(job, report).result())


@dataclass(frozen=True)
class Form:
    """What the page's form (and the API) asks for: make_video's parameters, under their names."""

    face_image: Optional[str] = None
    face_video: Optional[str] = None
    audio: Optional[str] = None
    text: Optional[str] = None
    voice: str = tts.DEFAULT_VOICE
    rate: float = 0
    model: str = DEFAULTS.checkpoint
    pad_top: float = DEFAULT_PADS[0]
    pad_bottom: float = DEFAULT_PADS[1]
    pad_left: float = DEFAULT_PADS[2]
    pad_right: float = DEFAULT_PADS[3]
    resize_factor: float = DEFAULTS.resize_factor
    smooth: bool = DEFAULTS.smooth
    static: bool = DEFAULTS.static
    fps: float = DEFAULTS.fps
    box: Optional[str] = None
    blend: str = DEFAULTS.blend
    detector: str = DEFAULTS.face_detector
    device: str = DEFAULTS.device
    face_enhancement: bool = DEFAULTS.face_enhancement
    face_index: Optional[float] = None

    def options(self) -> LipSyncOptions:
        return options_from_form(self.model, (self.pad_top, self.pad_bottom, self.pad_left, self.pad_right),
                                 self.resize_factor, self.smooth, self.static, self.fps, self.box, self.blend,
                                 self.detector, self.device, self.face_enhancement, self.face_index,
                                 video=bool(self.face_video))  # fmt: skip


FORM_FIELDS = frozenset(f.name for f in fields(Form))


@dataclass(frozen=True)
class Job:
    """A request checked and ready for the engine: its face, its speech (made from the text, if typed), options."""

    face: str
    speech_path: str
    speech: Optional[tts.Speech]
    speech_seconds: float
    options: LipSyncOptions
    outfile: Path


def prepare(limits: Limits, form: Form, workdir: Path, report: Reporter) -> Job:
    """Check the request against the limits and speak its text (in `workdir`): everything before the engine."""
    options = form.options()
    face, face_measured = one_face(form.face_image, form.face_video, limits)
    voice = speech_for(form.audio, form.text, form.voice, form.rate, workdir, limits, report,
                       face_video=form.face_video, face_measured=face_measured)
    if options.face_enhancement and not on_gpu(options):
        check_enhanced_seconds(voice.seconds, limits)
    quiet_paddle_signals()
    return Job(face, voice.path, voice.spoken, voice.seconds, options, workdir / OUTPUT_NAME)


def finished(job: Job, result: "lipsync.RunResult") -> Result:
    """A run's answer for the page: its notes as warnings; the video, the speech made from the text, the status."""
    for note in result.notes:  # e.g. a huge picture scaled down, Haar standing in for S3FD, frames without a face
        if not note.startswith(precision.NOTE_START):  # the precision is in the status line; its gate in --doctor
            gr.Warning(plain(note))
    return str(result.outfile), job.speech and str(job.speech.path), status_line(result, job.options, job.speech)


def on_gpu(options: LipSyncOptions) -> bool:
    """Whether a job with these options runs on the GPU (the device choice is made once per process)."""
    from lipsync import runtime

    return runtime.choose_device(options.device, announce=False).kind == "gpu"


def sharpen_note(threads: int = 0) -> str:
    """What face sharpening costs here, for the checkbox: GPEN-512 is fast on a GPU and slow on a CPU."""
    from lipsync import cpu, enhance

    if on_gpu(DEFAULTS):
        return "GPEN-512 restores the redrawn mouth's detail; on this GPU it adds a few seconds per 10 s of video"
    minutes = enhance.cpu_seconds(ENHANCE_NOTE_FRAMES, enhance.GPEN_SIZE, threads or cpu.cpu_threads()) / 60
    return (f"No GPU here: GPEN-512 adds about {minutes:.0f} min per 10 s of video on this CPU "
            f"(speech up to {Limits.from_env().max_enhanced_seconds:g} s with it)")


def sharpen_checkbox() -> gr.Checkbox:
    """On page load: the checkbox with what sharpening costs on this machine."""
    return gr.Checkbox(info=sharpen_note())


def preview_speech(
    limits: Limits, text: Optional[str] = None, voice: str = tts.DEFAULT_VOICE, rate: float = 0
) -> Tuple[str, str]:
    """Speak the text only, to hear the voice before making the video."""
    with request_folder() as workdir:
        speech = speech_for(None, text, voice, rate, workdir, limits, no_progress).spoken
    assert speech is not None  # text was given
    return str(speech.path), f"voice: {speech.engine} {speech.voice}"


def start_engine(job: Job, report: Reporter, segments: Optional[SegmentSink] = None) -> "Future[lipsync.RunResult]":
    """lipsync.run on one of the run threads (it waits for one); this request's context (gradio's progress bar)
    goes with it. `segments` receives the video while it is encoded (see lipsync.segments)."""
    extra = {"segments": segments} if segments is not None else {}
    return _runner.submit(contextvars.copy_context().run, lipsync.run, job.face, job.speech_path, job.outfile,
                          job.options, progress=report, **extra)  # fmt: skip


def set_runs_at_once(count: int) -> None:
    """How many lipsync runs may execute at once (the queue's concurrency limit for them); set before serving."""
    global _runner
    _runner.shutdown(wait=False)
    _runner = ThreadPoolExecutor(max(1, count), thread_name_prefix=RUN_THREAD_PREFIX)


@contextlib.contextmanager
def request_folder() -> Iterator[Path]:
    """A request's folder (kept while the job runs); when the request fails it is removed and the error put in
    the visitor's words."""
    with visitor_errors(), folders.requests.job() as workdir:
        yield workdir


@contextlib.contextmanager
def visitor_errors() -> Iterator[None]:
    """Any error raised inside, in the visitor's words (see for_visitor)."""
    try:
        yield
    except BaseException as exc:
        shown = for_visitor(exc)
        if shown is None:
            raise
        raise shown from exc


def for_visitor(exc: BaseException) -> Optional[gr.Error]:
    """The page's message: the engine's for a user error, a short account of anything unexpected (None: as is)."""
    if isinstance(exc, LipSyncError):
        return gr.Error(plain(str(exc)))
    if not isinstance(exc, Exception) or isinstance(exc, gr.Error):
        return None
    log.exception("lipsync failed")
    return gr.Error(plain(f"Something went wrong inside lipsync ({type(exc).__name__}: {first_line(exc)}); "
                          "please report it"))


@functools.lru_cache(maxsize=None)  # once per process
def quiet_paddle_signals() -> None:
    """Remove paddle's C++ signal handlers: on SIGTERM (a server stopped) it printed a scary 'FatalError' block."""
    import faulthandler

    import paddle

    paddle.disable_signal_handler()  # SIGTERM ends the process silently again, as before paddle loaded
    if not faulthandler.is_enabled():
        faulthandler.enable()  # a crash still says where it happened, as Python tracebacks of every thread
