"""The Gradio app (the Hugging Face Space): a face picture or video plus speech or typed text → a talking video."""

from __future__ import annotations

if __name__ == "__main__":  # `python app.py`: first of all, as a restart would import gradio and build the UI again
    from lipsync import cuda

    cuda.bootstrap()  # before paddle loads: on a GPU set-up this may restart the script once (see lipsync/cuda.py)

# The imports below follow the bootstrap on purpose (flake8's E402).
import contextlib
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

import gradio as gr

import lipsync
from lipsync import tts
from lipsync.errors import LipSyncError
from lipsync.options import BLEND_MODES, DEFAULT_PADS, DEVICES, FACE_DETECTORS, LipSyncOptions
from lipsync.tts import DEFAULT_VOICE
from lipsync.types import STAGE_AUDIO, STAGE_ENCODE, STAGE_FACES, STAGE_LOAD, STAGE_SPEECH, STAGE_SYNC

log = logging.getLogger("lipsync.app")

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "examples"
APP_TMP = Path(tempfile.gettempdir()) / "lipsync-app"  # under gettempdir(): gradio may serve files from here
REQUEST_PREFIX = "request-"
EXAMPLES_PREFIX = "examples-"  # + pid: cached example results, kept while that process runs
REQUEST_TTL_S = 3600  # request dirs older than this are removed; gradio copied their results long before
GRADIO_CACHE_CLEANUP = (3600, 6 * 3600)  # hourly, delete gradio's cached uploads/results older than 6 h
OUTPUT_NAME = "lipsync.mp4"
QUEUE_SIZE = 16  # waiting jobs beyond this are turned away ("queue full") instead of waiting for ages
CONCURRENCY_ENV = "LIPSYNC_CONCURRENCY"  # jobs run at once; 1 suits one GPU (the networks serialise anyway)
GPU_GROUP = "lipsync"  # concurrency group shared by every event that runs the networks
DEFAULTS = LipSyncOptions()
MODEL_NOTES = {
    "wav2lip_hq": "PaddleGAN's HQ model (default)",
    "wav2lip_gan": "sharper faces",
    "wav2lip": "most accurate lip shapes, blurrier",
}
STAGES = {  # engine stage → share of the progress bar (start, end)
    STAGE_SPEECH: (0.0, 0.05),
    STAGE_AUDIO: (0.05, 0.08),
    STAGE_LOAD: (0.08, 0.15),
    STAGE_FACES: (0.15, 0.3),
    STAGE_SYNC: (0.3, 0.95),
    STAGE_ENCODE: (0.95, 1.0),
}
PAD_MIN_WIDTH = 100  # px: the four pad boxes share one row of the half-page column (gradio's default is 160)
VOICE_API_NOTE = f"any edge-tts voice ShortName, such as {DEFAULT_VOICE} or de-DE-KatjaNeural (see edge-tts -l)"
HAAR_STOOD_IN = "The S3FD face detector's weights are not available here, so OpenCV's Haar detector found the faces."
EXAMPLE_TEXT = "Hi! I'm a cartoon, and now I can talk. Type anything, and I will say it."
DESCRIPTION = """\
# lipsync: make a face speak
Give a **face** (a picture or a video) and a **voice** (an audio file, a recording, or text to speak).
Wav2Lip on PaddlePaddle redraws the mouth to match the speech. Try an example below.
<small>The Wav2Lip weights are for personal, research and non-commercial use only. Don't use this to deceive.</small>
"""


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, from environment variables; 0 means no limit."""

    max_seconds: float = 60.0  # LIPSYNC_MAX_SECONDS: longest speech or face video
    max_upload_mb: float = 100.0  # LIPSYNC_MAX_UPLOAD_MB: largest uploaded file
    max_text_chars: int = 1000  # LIPSYNC_MAX_TEXT_CHARS: longest text to speak

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Limits":
        return cls(
            _env_number(env, "LIPSYNC_MAX_SECONDS", cls.max_seconds),
            _env_number(env, "LIPSYNC_MAX_UPLOAD_MB", cls.max_upload_mb),
            int(_env_number(env, "LIPSYNC_MAX_TEXT_CHARS", cls.max_text_chars)),
        )


def _env_number(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if value < 0:
        raise ValueError(f"{name} must be a number ≥ 0 (0 = no limit); got {text!r}")
    return value


def media_seconds(path: str | Path, require_video: bool = False) -> float:
    """Duration of an audio or video file (decoding it when the header does not say); 0 for a picture."""
    from lipsync import audio, video

    info = video.probe(path, require_video=require_video)
    if info.is_image:
        return 0.0
    seconds = info.duration or info.audio_duration
    if not seconds and not info.has_video:
        seconds = audio.duration(audio.load_audio(path))
    return seconds


def check_seconds(path: str | Path, what: str, limits: Limits, require_video: bool = False) -> None:
    """gr.Error when the file lasts longer than the app accepts (a face must be a picture or a video)."""
    if limits.max_seconds <= 0:
        return
    seconds = media_seconds(path, require_video)
    if seconds > limits.max_seconds:
        raise gr.Error(
            f"The {what} lasts {seconds:.1f} s; this app accepts up to {limits.max_seconds:g} s. "
            "Trim it, or run lipsync on your own machine (its command line has no limit)."
        )


def check_text(text: str, limits: Limits) -> None:
    if limits.max_text_chars and len(text) > limits.max_text_chars:
        raise gr.Error(f"The text has {len(text)} characters; this app speaks up to {limits.max_text_chars}.")


def request_dir(root: Path = APP_TMP, ttl_s: float = REQUEST_TTL_S) -> Path:
    """A fresh folder for one request; folders of requests older than ttl_s are removed first."""
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - ttl_s
    for old in root.glob(f"{REQUEST_PREFIX}*"):
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another request removed it first
            pass
    return Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=root))


def examples_cache(root: Path = APP_TMP) -> Path:
    """This process's folder for cached example results; those of processes that have ended are removed."""
    for folder in root.glob(f"{EXAMPLES_PREFIX}*"):
        pid = folder.name.removeprefix(EXAMPLES_PREFIX)
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    return root / f"{EXAMPLES_PREFIX}{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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


def usable_detector(options: LipSyncOptions) -> Tuple[LipSyncOptions, Optional[str]]:
    """S3FD needs weights; when they cannot be had (offline, no file), detect with Haar and say so."""
    if options.face_detector != "sfd" or options.box is not None:
        return options, None
    from lipsync import weights

    try:
        weights.resolve_weights(options.detector_weights, "s3fd")
    except LipSyncError as exc:
        log.warning("S3FD unavailable, using Haar: %s", exc)
        return replace(options, face_detector="haar"), HAAR_STOOD_IN
    return options, None


def progress_reporter(progress: Callable[..., object]) -> Callable[[str, int, int], None]:
    """The engine's (stage, done, total) callback drawn as one bar across all stages."""

    def report(stage: str, done: int, total: int) -> None:
        start, end = STAGES.get(stage, (0.0, 1.0))
        share = min(done / total, 1.0) if total > 0 else 0.0
        counts = f" {done}/{total}" if total > 1 else ""
        progress(start + (end - start) * share, desc=f"{stage}{counts}")

    return report


def _no_progress(*args: object, **kwargs: object) -> None:
    return None


def _one_face(face_image: Optional[str], face_video: Optional[str], limits: Limits) -> str:
    if face_image and face_video:
        raise LipSyncError("Give one face: a picture or a video, not both.")
    if not (face_image or face_video):
        raise LipSyncError("Give a face: upload a picture or a video (or use the webcam).")
    if face_video:
        check_seconds(face_video, "face video", limits, require_video=True)
    return face_image or face_video  # type: ignore[return-value]


def _speech(
    audio: Optional[str], text: Optional[str], voice: str, rate: float, workdir: Path, limits: Limits, report
) -> Tuple[str, Optional[tts.Speech]]:
    """The speech to lip-sync: the audio given, or the text spoken by edge-tts (espeak-ng offline)."""
    text = text or ""
    if audio and text.strip():
        raise LipSyncError("Give the voice as an audio file or as text, not both.")
    if audio:
        check_seconds(audio, "audio", limits)
        return audio, None
    if not text.strip():
        raise LipSyncError("Give a voice: upload or record audio, or type a text to speak.")
    check_text(text, limits)
    report(STAGE_SPEECH, 0, 1)
    speech = tts.speak(text, workdir, voice or tts.DEFAULT_VOICE, int(rate or 0))
    report(STAGE_SPEECH, 1, 1)
    if speech.fallback_reason:
        gr.Warning(f"Spoken offline by espeak-ng: {speech.fallback_reason}.")
    check_seconds(speech.path, "speech made from your text", limits)
    return str(speech.path), speech


def _options(model, pads, resize_factor, smooth, static, fps, box, blend, detector, device) -> LipSyncOptions:
    return LipSyncOptions(
        checkpoint=model or DEFAULTS.checkpoint,
        pads=tuple(int(p or 0) for p in pads),  # type: ignore[arg-type]
        resize_factor=int(resize_factor or 1),
        smooth=bool(smooth),
        static=bool(static),
        fps=float(fps or DEFAULTS.fps),
        box=parse_box(box or ""),
        blend=blend or DEFAULTS.blend,
        face_detector=detector or DEFAULTS.face_detector,
        device=device or DEFAULTS.device,
    )


def status_line(result: "lipsync.RunResult", options: LipSyncOptions, speech: Optional[tts.Speech]) -> str:
    """What ran, in one line: model, device, paddle, frames, time, detector, voice."""
    faces = "fixed box" if options.box else options.face_detector
    line = (
        f"{result.model} on {result.device} · paddle {result.paddle} · {result.frames} frames at "
        f"{result.fps:g} fps · {result.seconds:.1f} s · faces: {faces}"
    )
    if speech is not None:
        line += f" · voice: {speech.engine} {speech.voice}"
    return line


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
    progress=gr.Progress(track_tqdm=True),  # tqdm too: a first run's weights download shows its bar
) -> Tuple[str, Optional[str], str]:
    """Make the face speak: returns the video, the speech made from the text (if any) and a status line."""
    report = progress_reporter(progress)
    with _request_folder() as workdir:
        options = _options(model, (pad_top, pad_bottom, pad_left, pad_right), resize_factor, smooth, static, fps,
                           box, blend, detector, device)  # fmt: skip
        face = _one_face(face_image, face_video, limits)
        speech_path, speech = _speech(audio, text, voice, rate, workdir, limits, report)
        options, note = usable_detector(options)
        if note:
            gr.Warning(note)
        quiet_paddle_signals()
        result = lipsync.run(face, speech_path, workdir / OUTPUT_NAME, options, progress=report)
        for adjusted in result.notes:  # e.g. a huge picture scaled down to what players decode
            gr.Warning(adjusted)
    return str(result.outfile), speech and str(speech.path), status_line(result, options, speech)


@contextlib.contextmanager
def _request_folder() -> Iterator[Path]:
    """A request's folder; when the request fails it is removed and the error put in the visitor's words."""
    workdir = request_dir()
    try:
        yield workdir
    except BaseException as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        shown = _for_visitor(exc)
        if shown is None:
            raise
        raise shown from exc


def _for_visitor(exc: BaseException) -> Optional[gr.Error]:
    """The page's message: the engine's for a user error, a short account of anything unexpected (None: as is)."""
    if isinstance(exc, LipSyncError):
        return gr.Error(str(exc))
    if not isinstance(exc, Exception) or isinstance(exc, gr.Error):
        return None
    log.exception("lipsync failed")
    return gr.Error(f"Something went wrong inside lipsync ({type(exc).__name__}: {tts.reason(exc)}); please report it")


def preview_speech(
    limits: Limits, text: Optional[str] = None, voice: str = tts.DEFAULT_VOICE, rate: float = 0
) -> Tuple[str, str]:
    """Speak the text only, to hear the voice before making the video."""
    with _request_folder() as workdir:
        path, speech = _speech(None, text, voice, rate, workdir, limits, _no_progress)
    assert speech is not None  # text was given
    return path, f"voice: {speech.engine} {speech.voice}"


@functools.lru_cache(maxsize=None)  # once per process
def quiet_paddle_signals() -> None:
    """Remove paddle's C++ signal handlers: on SIGTERM (a server stopped) it printed a scary 'FatalError' block."""
    import faulthandler

    import paddle

    paddle.disable_signal_handler()  # SIGTERM ends the process silently again, as before paddle loaded
    if not faulthandler.is_enabled():
        faulthandler.enable()  # a crash still says where it happened, as Python tracebacks of every thread


# ---------------------------------------------------------------- examples

Result = Tuple[str, Optional[str], str]  # make_video's: the video, the speech made from the text, the status line


@dataclass(frozen=True)
class Example:
    """One example: what it puts into the form, and the options it runs with (never shown in the widgets)."""

    label: str
    face_image: Optional[str] = None
    face_video: Optional[str] = None
    audio: Optional[str] = None
    text: str = ""
    voice: str = DEFAULT_VOICE
    detector: str = DEFAULTS.face_detector

    def row(self) -> list:
        """Its values for gr.Examples' inputs: face picture, face video, audio, text."""
        return [self.face_image, self.face_video, self.audio, self.text]


EXAMPLE_SET = (
    Example("Cartoon + typed text", face_image=str(EXAMPLES / "cartoon.png"), text=EXAMPLE_TEXT,
            voice="en-US-AndrewMultilingualNeural", detector="haar"),  # S3FD finds no face in a drawing
    Example("Photo + speech", face_image=str(EXAMPLES / "astronaut.jpg"), audio=str(EXAMPLES / "astronaut.mp3")),
    Example("Video + speech", face_video=str(EXAMPLES / "clip.mp4"), audio=str(EXAMPLES / "clip.mp3")),
)  # fmt: skip


class ExampleResults:
    """Each example's result, made on its first click (with progress bar and warnings), then kept for this process."""

    def __init__(self, generate: Callable[..., Result], folder: Path) -> None:
        self._generate = generate
        self._folder = folder
        self._results: Dict[int, Result] = {}
        self._locks = [threading.Lock() for _ in EXAMPLE_SET]

    def get(self, index: int, progress: Callable[..., Any] = _no_progress) -> Result:
        with self._locks[index]:  # two first clicks make it once
            if index not in self._results or not Path(self._results[index][0]).is_file():  # or a temp cleaner took it
                example = EXAMPLE_SET[index]
                made = self._generate(face_image=example.face_image, face_video=example.face_video, audio=example.audio,
                                      text=example.text, voice=example.voice, detector=example.detector,
                                      progress=progress)  # fmt: skip
                self._results[index] = keep_result(made, self._folder / str(index))
        return self._results[index]


def keep_result(made: Result, folder: Path) -> Result:
    """The result with its files moved from their request folder (removed after an hour) into `folder`."""
    video, speech, status = made
    folder.mkdir(parents=True, exist_ok=True)
    kept_video = str(shutil.move(video, folder / Path(video).name))
    kept_speech = speech and str(shutil.move(speech, folder / Path(speech).name))
    shutil.rmtree(Path(video).parent, ignore_errors=True)  # the speech was made there too
    return kept_video, kept_speech, status


def run_example(results: ExampleResults, selected: Tuple[int, list], progress=gr.Progress(track_tqdm=True)) -> Result:
    """The clicked example's result (selected: gr.Examples' index and row), made at its first click."""
    return results.get(selected[0], progress)


def example_voice(selected: Tuple[int, list]) -> tuple:
    """An example's language, voice and voice tab, set as plain values (gr.Examples would reset the pickers' lists)."""
    example = EXAMPLE_SET[selected[0]]
    if not example.text:
        return gr.update(), gr.update(), gr.update()
    return tts.locale_of(example.voice), example.voice, gr.Tabs(selected="text")


# ---------------------------------------------------------------- voice picker


def language_choices() -> list:
    return tts.catalog().languages()


def voice_choices(locale: str) -> list:
    return [(v.label, v.name) for v in tts.catalog().voices(locale)]


def voices_for_language(locale: str, voice: str):
    """The voice list of a language; the current voice stays if it speaks that language."""
    choices = voice_choices(locale)
    keep = voice if voice and tts.locale_of(voice) == locale else (choices[0][1] if choices else None)
    return gr.Dropdown(choices=choices, value=keep)


def refresh_voice_picker(locale: str, voice: str):
    """On page load: the service's voice list when it can be fetched (at most daily), else the curated one."""
    tts.catalog().refresh()
    return gr.Dropdown(choices=language_choices()), voices_for_language(locale, voice)


def keep_one(new, tab: str):
    """When one of two alternative inputs gets a value, clear the other and show its tab."""
    if not new or (isinstance(new, str) and not new.strip()):
        return gr.update(), gr.update()
    return None, gr.Tabs(selected=tab)


# ---------------------------------------------------------------- layout


def voice_api_info() -> Dict[str, Any]:
    """The voice parameter's API type: any voice name, not just the few choices the page starts with."""
    return {"type": "string", "pattern": tts.VOICE_PATTERN.pattern, "additional_description": VOICE_API_NOTE}


def readable_picture(preprocess: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """gr.Image.preprocess, but a picture PIL cannot open (empty, damaged, not a picture) gets lipsync's own
    message instead of gradio's silent failure."""

    @functools.wraps(preprocess)
    def checked(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
            raise gr.Error(picture_problem(getattr(payload, "path", None), exc)) from exc

    return checked


def picture_problem(path: Optional[str], exc: BaseException) -> str:
    """What is wrong with an uploaded picture, in lipsync's words."""
    from lipsync import video

    if path and Path(path).is_file() and Path(path).stat().st_size == 0:
        return "The face picture is empty (0 bytes); was the upload complete?"
    try:
        video.probe(path or "")
    except LipSyncError as problem:
        return str(problem)
    return f"The face picture could not be opened ({exc}); save it again as jpg or png."


def _face_inputs() -> Tuple[gr.Tabs, gr.Image, gr.Video]:
    with gr.Tabs(selected="picture") as tabs:
        with gr.Tab("Picture", id="picture"):
            # image_mode None: uploads reach lipsync as they are (it reads CMYK, 16-bit, alpha and EXIF itself);
            # webcam shots arrive as png
            image = gr.Image(label="Face picture", type="filepath", sources=["upload", "webcam", "clipboard"],
                             image_mode=None, format="png", height=320, elem_id="face-image")  # fmt: skip
            image.preprocess = readable_picture(image.preprocess)  # an instance patch: see voice.api_info
        with gr.Tab("Video", id="video"):
            video = gr.Video(label="Face video", sources=["upload", "webcam"], height=320, elem_id="face-video")
    return tabs, image, video


def _voice_inputs():
    with gr.Tabs(selected="text") as tabs:
        with gr.Tab("Type text", id="text"):
            text = gr.Textbox(label="Text to speak", lines=3, placeholder="Type what the face should say…",
                              elem_id="text")  # fmt: skip
            with gr.Row():
                language = gr.Dropdown(language_choices(), value=tts.DEFAULT_LOCALE, label="Language")
                voice = gr.Dropdown(voice_choices(tts.DEFAULT_LOCALE), value=tts.DEFAULT_VOICE, label="Voice",
                                    allow_custom_value=True, filterable=True)  # fmt: skip
                # not a subclass: gradio writes a .pyi beside the file of every Component subclass
                voice.api_info = voice_api_info
            rate = gr.Slider(tts.MIN_RATE, tts.MAX_RATE, value=0, step=5, label="Speaking rate (%)")
            preview = gr.Button("▶ Hear the voice", size="sm", elem_id="preview")
        with gr.Tab("Audio file", id="audio"):
            audio = gr.Audio(label="Speech", type="filepath", sources=["upload", "microphone"], elem_id="audio")
    return tabs, text, language, voice, rate, preview, audio


def _advanced_inputs() -> list:
    """The engine options that matter to users, in make_video's order."""
    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
        with gr.Row(elem_id="pads"):
            names = ("Pad top", "Pad bottom (chin)", "Pad left", "Pad right")
            pads = [gr.Number(value=v, precision=0, label=name, minimum=0, min_width=PAD_MIN_WIDTH)
                    for v, name in zip(DEFAULT_PADS, names)]  # fmt: skip
        with gr.Row():
            detector = gr.Radio(list(FACE_DETECTORS), value=DEFAULTS.face_detector, label="Face detector",
                                info="sfd: S3FD, best (Haar stands in without its weights); haar: OpenCV",
                                elem_id="detector")  # fmt: skip
            blend = gr.Radio(list(BLEND_MODES), value=DEFAULTS.blend, label="Blending",
                             info="feather: soft paste of the lower face; box: the seed's hard rectangle")  # fmt: skip
        with gr.Row():
            resize = gr.Slider(1, 4, value=DEFAULTS.resize_factor, step=1, label="Resize factor",
                               info="divide the resolution first: faster on large videos")  # fmt: skip
            fps = gr.Slider(10, 60, value=DEFAULTS.fps, step=1, label="Frame rate for pictures")
        with gr.Row():
            smooth = gr.Checkbox(value=DEFAULTS.smooth, label="Smooth face boxes over time")
            static = gr.Checkbox(value=DEFAULTS.static, label="Video: use only its first frame")
            device = gr.Radio(list(DEVICES), value=DEFAULTS.device, label="Device")
        box = gr.Textbox(label="Face box (last resort)", placeholder="y1 y2 x1 x2 in pixels; empty = detect the face")
    return [*pads, resize, smooth, static, fps, box, blend, detector, device]


def _examples(results: ExampleResults, form: list, voice_form: list, outputs: list) -> gr.Examples:
    """The example buttons: a click fills the form, then shows the example's result (made once, in the GPU group)."""
    examples = gr.Examples([e.row() for e in EXAMPLE_SET], form, cache_examples=False, label="Examples",
                           example_labels=[e.label for e in EXAMPLE_SET])  # fmt: skip
    voice_set = examples.load_input_event.then(example_voice, examples.dataset, voice_form, queue=False,
                                               show_progress="hidden", api_visibility="private")  # fmt: skip
    voice_set.then(functools.partial(run_example, results), examples.dataset, outputs, concurrency_id=GPU_GROUP,
                   api_visibility="private")  # fmt: skip
    return examples


def _wire_alternatives(image, video, face_tabs, audio, text, voice_tabs) -> None:
    light = dict(queue=False, show_progress="hidden", api_visibility="private")
    image.change(functools.partial(keep_one, tab="picture"), image, [video, face_tabs], **light)
    video.change(functools.partial(keep_one, tab="video"), video, [image, face_tabs], **light)
    audio.change(functools.partial(keep_one, tab="audio"), audio, [text, voice_tabs], **light)
    text.input(functools.partial(keep_one, tab="text"), text, [audio, voice_tabs], **light)


def build_demo(limits: Optional[Limits] = None) -> gr.Blocks:
    """The whole UI; nothing is loaded until the first request (networks load once per process)."""
    limits = limits or Limits.from_env()
    generate = functools.partial(make_video, limits)
    with gr.Blocks(title="lipsync: make a face speak", delete_cache=GRADIO_CACHE_CLEANUP) as demo:
        gr.Markdown(DESCRIPTION)
        with gr.Row(equal_height=False):
            with gr.Column():
                face_tabs, image, video = _face_inputs()
                voice_tabs, text, language, voice, rate, preview, audio = _voice_inputs()
                models = [(f"{m}: {MODEL_NOTES.get(m, '')}", m) for m in lipsync.available_models("wav2lip")]
                model = gr.Dropdown(models, value=DEFAULTS.checkpoint, label="Model")
                advanced = _advanced_inputs()
                run = gr.Button("Make it speak", variant="primary", elem_id="run")
            with gr.Column():
                result = gr.Video(label="Result", buttons=["download"], interactive=False, autoplay=True,
                                  elem_id="result")  # fmt: skip
                speech = gr.Audio(label="Speech made from the text", type="filepath", interactive=False,
                                  elem_id="speech")  # fmt: skip
                status = gr.Textbox(label="Status", interactive=False, lines=1, elem_id="status")
        inputs = [image, video, audio, text, voice, rate, model, *advanced]
        run.click(generate, inputs, [result, speech, status], api_name="lipsync", concurrency_id=GPU_GROUP)
        preview.click(functools.partial(preview_speech, limits), [text, voice, rate], [speech, status],
                      api_name="speak", concurrency_limit=None)  # fmt: skip
        _examples(ExampleResults(generate, examples_cache()), [image, video, audio, text],
                  [language, voice, voice_tabs], [result, speech, status])  # fmt: skip
        language.change(voices_for_language, [language, voice], voice, queue=False, api_visibility="private")
        _wire_alternatives(image, video, face_tabs, audio, text, voice_tabs)
        demo.load(refresh_voice_picker, [language, voice], [language, voice], queue=False, api_visibility="private")
    return demo


def launch_options(limits: Limits) -> dict:
    """demo.launch() arguments: the upload limit (gradio enforces it server-side)."""
    return {"max_file_size": f"{limits.max_upload_mb:g}mb" if limits.max_upload_mb else None}


def queue(demo: gr.Blocks) -> gr.Blocks:
    """One job at a time per GPU by default; a bounded waiting line."""
    concurrency = max(1, int(_env_number(os.environ, CONCURRENCY_ENV, 1)))
    return demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)


demo = queue(build_demo())

if __name__ == "__main__":
    demo.launch(**launch_options(Limits.from_env()))
