"""The example buttons: each example's result is made on its first click (progress bar and warnings shown),
then kept for the rest of the process."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import gradio as gr

from lipsync import tts

from .jobs import DEFAULTS, Result, no_progress
from .stream import Update, download_button

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_TEXT = "Hi! I'm a cartoon, and now I can talk. Type anything, and I will say it."


@dataclass(frozen=True)
class Example:
    """One example: what it puts into the form, and the options it runs with (never shown in the widgets)."""

    label: str
    face_image: Optional[str] = None
    face_video: Optional[str] = None
    audio: Optional[str] = None
    text: str = ""
    voice: str = tts.DEFAULT_VOICE
    detector: str = DEFAULTS.face_detector
    thumbnail: Optional[str] = None  # what the example's button shows: its face (a still, for a video)

    def row(self) -> list:
        """Its values for gr.Examples' inputs: face picture, face video, audio, text."""
        return [self.face_image, self.face_video, self.audio, self.text]

    def shown_row(self) -> list:
        """row(), after what its button shows: the face's thumbnail and the label."""
        return [self.thumbnail or self.face_image, self.label, *self.row()]


EXAMPLE_SET = (
    Example("Cartoon + typed text", face_image=str(EXAMPLES / "cartoon.png"), text=EXAMPLE_TEXT,
            voice="en-US-AndrewMultilingualNeural", detector="haar"),  # S3FD finds no face in a drawing
    Example("Photo + speech", face_image=str(EXAMPLES / "astronaut.jpg"), audio=str(EXAMPLES / "astronaut.mp3")),
    Example("Video + speech", face_video=str(EXAMPLES / "clip.mp4"), audio=str(EXAMPLES / "clip.mp3"),
            thumbnail=str(EXAMPLES / "clip.jpg")),  # made by make_examples.py from the clip's first frame
)  # fmt: skip


class ExampleResults:
    """Each example's result, made on its first click (with progress bar and warnings), then kept for this process."""

    def __init__(self, generate: Callable[..., Result], folder: Path) -> None:
        self._generate = generate
        self._folder = folder
        self._results: Dict[int, Result] = {}
        self._locks = [threading.Lock() for _ in EXAMPLE_SET]

    def get(self, index: int, progress: Callable[..., Any] = no_progress) -> Result:
        with self._locks[index]:  # two first clicks make it once
            if index not in self._results or not Path(self._results[index][0]).is_file():  # or a temp cleaner took it
                example = EXAMPLE_SET[index]
                made = self._generate(face_image=example.face_image, face_video=example.face_video, audio=example.audio,
                                      text=example.text, voice=example.voice, detector=example.detector,
                                      progress=progress)  # fmt: skip
                self._results[index] = keep_result(made, self._folder / str(index))
        return self._results[index]


def keep_result(made: Result, folder: Path) -> Result:
    """The result with its files moved from their request folder (removed after a while) into `folder`."""
    video, speech, status = made
    folder.mkdir(parents=True, exist_ok=True)
    kept_video = str(shutil.move(video, folder / Path(video).name))
    kept_speech = speech and str(shutil.move(speech, folder / Path(speech).name))
    shutil.rmtree(Path(video).parent, ignore_errors=True)  # the speech was made there too
    return kept_video, kept_speech, status


def run_example(results: ExampleResults, selected: Tuple[int, list],
                progress=gr.Progress(track_tqdm=True)) -> Iterator[Update]:  # fmt: skip
    """The clicked example's result (selected: gr.Examples' index and row), made at its first click, for the
    streaming player (as one segment) and the download button."""
    yield gr.skip(), download_button(), None, ""  # the last result's download and status go, as for a new job
    video, speech, status = results.get(selected[0], progress)
    yield video, download_button(video), speech, status


def example_voice(selected: Tuple[int, list]) -> tuple:
    """An example's language, voice and voice tab, set as plain values (gr.Examples would reset the pickers' lists)."""
    example = EXAMPLE_SET[selected[0]]
    if not example.text:
        return gr.update(), gr.update(), gr.update()
    return tts.locale_of(example.voice), example.voice, gr.Tabs(selected="text")
