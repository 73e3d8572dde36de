"""The Gradio app (the Hugging Face Space): a face picture or video plus speech or typed text → a talking video.

This file lays out the page and wires its events; the webapp package handles the requests."""

from __future__ import annotations

if __name__ == "__main__":  # `python app.py`: first of all, as a restart would import gradio and build the UI again
    from lipsync import cuda

    cuda.bootstrap()  # before paddle loads: on a GPU set-up this may restart the script once (see lipsync/cuda.py)

# The imports below follow the bootstrap on purpose (flake8's E402).
import functools
import os
from typing import Optional, Tuple

import gradio as gr

import lipsync
from lipsync import tts
from lipsync.options import BLEND_MODES, DEFAULT_PADS, DEVICES, FACE_DETECTORS, MAX_FPS
from webapp import form, jobs, picker, voices
from webapp.examples import EXAMPLE_SET, ExampleResults, example_voice, run_example
from webapp.folders import examples_cache
from webapp.jobs import DEFAULTS, make_video, preview_speech
from webapp.stream import make_video_stream
from webapp.limits import Limits, env_number, launch_options

GRADIO_CACHE_CLEANUP = (3600, 6 * 3600)  # hourly, delete gradio's cached uploads/results older than 6 h
QUEUE_SIZE = 16  # waiting jobs beyond this are turned away ("queue full") instead of waiting for ages
CONCURRENCY_ENV = "LIPSYNC_CONCURRENCY"  # jobs run at once; 1 suits one GPU (the networks serialise anyway)
GPU_GROUP = "lipsync"  # concurrency group shared by every event that runs the networks
SPEECH_GROUP = "speak"  # the voice previews: light (a network call or espeak-ng), but bounded too
SPEECH_CONCURRENCY = jobs.SPEECHES_AT_ONCE  # previews spoken at once
FACES_GROUP = "faces"  # the face picker's detection, one upload at a time
FACE_COLUMNS = 6  # thumbnails per row in the face picker
FACES_HEIGHT = 130  # px: the picker shows one row of thumbnails (more rows scroll)
MODEL_NOTES = {
    "wav2lip_hq": "PaddleGAN's HQ model (default)",
    "wav2lip_gan": "sharper faces",
    "wav2lip": "most accurate lip shapes, blurrier",
}
PAD_MIN_WIDTH = 100  # px: the four pad boxes share one row of the half-page column (gradio's default is 160)
DESCRIPTION = """\
# lipsync: make a face speak
Give a **face** (a picture or a video) and a **voice** (an audio file, a recording, or text to speak;
without one, a video with sound speaks its own).
Wav2Lip on PaddlePaddle redraws the mouth to match the speech. Try an example below.
<small>The Wav2Lip weights are for personal, research and non-commercial use only. Don't use this to deceive.</small>
"""


def _face_inputs() -> Tuple[gr.Tabs, gr.Image, gr.Video]:
    with gr.Tabs(selected="picture") as tabs:
        with gr.Tab("Picture", id="picture"):
            # image_mode None: uploads reach lipsync as they are (it reads CMYK, 16-bit, alpha and EXIF itself);
            # webcam shots arrive as png
            image = gr.Image(label="Face picture", type="filepath", sources=["upload", "webcam", "clipboard"],
                             image_mode=None, format="png", height=320, elem_id="face-image")  # fmt: skip
            image.preprocess = form.readable_picture(image.preprocess)  # an instance patch: see voice.api_info
        with gr.Tab("Video", id="video"):
            video = gr.Video(label="Face video", sources=["upload", "webcam"], height=320, elem_id="face-video")
    return tabs, image, video


def _face_picker() -> Tuple[gr.Column, gr.Markdown, gr.Image, gr.Gallery, gr.Button, gr.Number]:
    """The faces found, to click one; the number clicked is the /lipsync endpoint's face_index. A video without a
    face found shows its first frame, to click the face on."""
    with gr.Column(visible=False, elem_id="picker") as column:
        heading = gr.Markdown(elem_id="picker-heading")  # a gallery's own label would cover the faces' tops
        still = gr.Image(label="The video's first frame: click on the face", type="filepath", format="png",
                         interactive=False, visible=False, height=320, buttons=[], elem_id="face-frame")  # fmt: skip
        gallery = gr.Gallery(show_label=False, columns=FACE_COLUMNS, fit_columns=False, height=FACES_HEIGHT,
                             allow_preview=False, object_fit="contain", interactive=False, buttons=[],
                             elem_id="faces")  # fmt: skip
        automatic = gr.Button("Most confident face (automatic)", size="sm", elem_id="auto-face")
    index = gr.Number(value=None, precision=0, label="Face index", visible="hidden", elem_id="face-index")
    return column, heading, still, gallery, automatic, index


def _wire_picker(image, video, advanced: list, column, heading, still, gallery, automatic, index) -> None:
    """Faces found: click one. None found: click on the picture (or the video's first frame), above the eyebrows
    then the chin, for the box."""
    resize, box, detector = advanced[4], advanced[8], advanced[10]  # _advanced_inputs' order
    clicks = gr.State(None)  # picker.Clicks: waiting for clicks on a face without a face found
    for changed in (image.change, video.change, detector.change, resize.change):
        changed(picker.faces_of, [image, video, detector, resize, box, clicks],
                [column, heading, gallery, automatic, index, box, clicks, still], api_visibility="private",
                concurrency_id=FACES_GROUP, concurrency_limit=1, show_progress="minimal")  # fmt: skip
    light = dict(queue=False, show_progress="hidden", api_visibility="private")
    gallery.select(picker.chosen, clicks, index, **light)
    automatic.click(picker.automatic, None, [index, gallery], **light)
    for shown in (image, still):
        shown.select(picker.clicked, [shown, clicks], [heading, box, clicks, gallery], **light)


def _voice_inputs():
    with gr.Tabs(selected="text") as tabs:
        with gr.Tab("Type text", id="text"):
            text = gr.Textbox(label="Text to speak", lines=3, placeholder="Type what the face should say…",
                              elem_id="text")  # fmt: skip
            with gr.Row():
                language = gr.Dropdown(voices.language_choices(), value=tts.DEFAULT_LOCALE, label="Language")
                voice = gr.Dropdown(voices.voice_choices(tts.DEFAULT_LOCALE), value=tts.DEFAULT_VOICE, label="Voice",
                                    allow_custom_value=True, filterable=True)  # fmt: skip
                # not a subclass: gradio writes a .pyi beside the file of every Component subclass
                voice.api_info = voices.voice_api_info
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
            fps = gr.Slider(10, MAX_FPS, value=DEFAULTS.fps, step=1,
                            label="Frame rate for pictures and slow videos (GIFs)")
        with gr.Row():
            smooth = gr.Checkbox(value=DEFAULTS.smooth, label="Smooth face boxes over time")
            static = gr.Checkbox(value=DEFAULTS.static, label="Video: use only its first frame")
            device = gr.Radio(list(DEVICES), value=DEFAULTS.device, label="Device")
        box = gr.Textbox(label="Face box (last resort)", placeholder="y1 y2 x1 x2 in pixels; empty = detect the face",
                         elem_id="face-box")
    return [*pads, resize, smooth, static, fps, box, blend, detector, device]


def _examples(results: ExampleResults, inputs: list, voice_form: list, outputs: list, status) -> gr.Examples:
    """The example buttons, each its face's thumbnail and label: a click fills the form, then plays the example's
    result (made once, in the GPU group)."""
    shown = [gr.Image(visible=False, label="Face", type="filepath"), gr.Textbox(visible=False, label="Example")]
    examples = gr.Examples([e.shown_row() for e in EXAMPLE_SET], [*shown, *inputs], cache_examples=False,
                           label="Examples", visible_columns=[0, 1], elem_id="examples")  # fmt: skip
    voice_set = examples.load_input_event.then(example_voice, examples.dataset, voice_form, queue=False,
                                               show_progress="hidden", api_visibility="private")  # fmt: skip
    voice_set.then(functools.partial(run_example, results), examples.dataset, outputs, concurrency_id=GPU_GROUP,
                   show_progress_on=[status], api_visibility="private")  # fmt: skip
    return examples


def _wire_alternatives(image, video, face_tabs, audio, text, voice_tabs) -> None:
    light = dict(queue=False, show_progress="hidden", api_visibility="private")
    image.change(functools.partial(form.keep_one, tab="picture"), image, [video, face_tabs], **light)
    image.upload(form.viewable_picture, image, image, **light)  # HEIC: shown as JPEG
    video.change(functools.partial(form.keep_one, tab="video"), video, [image, face_tabs], **light)
    audio.change(functools.partial(form.keep_one, tab="audio"), audio, [text, voice_tabs], **light)
    text.input(functools.partial(form.keep_one, tab="text"), text, [audio, voice_tabs], **light)


def _outputs() -> Tuple[gr.Video, gr.DownloadButton, gr.Audio, gr.Textbox]:
    # streamed: it plays while the job runs; the download button offers the finished mp4 (the same as the CLI's)
    result = gr.Video(label="Result", streaming=True, autoplay=True, interactive=False, buttons=[], elem_id="result")
    download = gr.DownloadButton("Download the mp4", visible=False, elem_id="download")
    speech = gr.Audio(label="Speech made from the text", type="filepath", interactive=False, elem_id="speech")
    status = gr.Textbox(label="Status", interactive=False, lines=1, elem_id="status")
    return result, download, speech, status


def _api_endpoint(generate, inputs: list, speech: gr.Audio, status: gr.Textbox) -> None:
    """/lipsync: the finished mp4, speech and status in one answer, for API clients (the page streams instead)."""
    trigger = gr.Button(visible=False, elem_id="api-run")
    video = gr.Video(label="Result", visible=False, interactive=False)
    trigger.click(generate, inputs, [video, speech, status], api_name="lipsync", concurrency_id=GPU_GROUP)


def build_demo(limits: Optional[Limits] = None) -> gr.Blocks:
    """The whole UI; nothing is loaded until the first request (networks load once per process)."""
    limits = limits or Limits.from_env()
    generate = functools.partial(make_video, limits)
    with gr.Blocks(title="lipsync: make a face speak", delete_cache=GRADIO_CACHE_CLEANUP) as demo:
        gr.Markdown(DESCRIPTION)
        with gr.Row(equal_height=False):
            with gr.Column():
                face_tabs, image, video = _face_inputs()
                picked = _face_picker()
                voice_tabs, text, language, voice, rate, preview, audio = _voice_inputs()
                models = [(f"{m}: {MODEL_NOTES.get(m, '')}", m) for m in lipsync.available_models("wav2lip")]
                model = gr.Dropdown(models, value=DEFAULTS.checkpoint, label="Model")
                sharpen = gr.Checkbox(value=DEFAULTS.face_enhancement, label="Sharpen the face (GPEN)",
                                      info="restores the redrawn mouth's detail", elem_id="sharpen")  # fmt: skip
                advanced = _advanced_inputs()
                run = gr.Button("Make it speak", variant="primary", elem_id="run")
            with gr.Column():
                result, download, speech, status = _outputs()
        inputs = [image, video, audio, text, voice, rate, model, *advanced, sharpen, picked[-1]]  # make_video's order
        run.click(functools.partial(make_video_stream, limits), inputs, [result, download, speech, status],
                  api_name="lipsync_stream", concurrency_id=GPU_GROUP, show_progress_on=[status])  # fmt: skip
        _api_endpoint(generate, inputs, speech, status)
        preview.click(functools.partial(preview_speech, limits), [text, voice, rate], [speech, status],
                      api_name="speak", concurrency_id=SPEECH_GROUP, concurrency_limit=SPEECH_CONCURRENCY)  # fmt: skip
        _examples(ExampleResults(generate, examples_cache()), [image, video, audio, text],
                  [language, voice, voice_tabs], [result, download, speech, status], status)  # fmt: skip
        language.change(voices.voices_for_language, [language, voice], voice, queue=False, api_visibility="private")
        _wire_alternatives(image, video, face_tabs, audio, text, voice_tabs)
        _wire_picker(image, video, advanced, *picked)
        demo.load(voices.refresh_voice_picker, [language, voice], [language, voice], queue=False,
                  api_visibility="private")  # fmt: skip
        demo.load(jobs.sharpen_checkbox, None, sharpen, queue=False, api_visibility="private")  # slow on a CPU?
    return demo


def queue(demo: gr.Blocks) -> gr.Blocks:
    """One job at a time per GPU by default (LIPSYNC_CONCURRENCY); a bounded waiting line."""
    concurrency = max(1, int(env_number(os.environ, CONCURRENCY_ENV, 1)))
    jobs.set_runs_at_once(concurrency)  # also when gradio lets a cancelled job's thread run on
    return demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)


demo = queue(build_demo())

if __name__ == "__main__":
    demo.launch(**launch_options(Limits.from_env()))
