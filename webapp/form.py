"""Helpers of the form: one of two alternative inputs at a time, uploaded pictures checked by lipsync, and
messages shown as the text they are."""

from __future__ import annotations

import functools
import html
from pathlib import Path
from typing import Any, Callable, Optional

import gradio as gr

from lipsync.errors import LipSyncError


# An uploaded HEIC is shown, and then read by the run, as a JPEG of this quality with its colour kept at full
# resolution: on the astronaut photo its pixels are 0.75 grey levels from the photo's on average, 8 at most.
VIEWABLE_JPEG = {"quality": 98, "subsampling": 0}


def plain(message: str) -> str:
    """A message for gr.Warning or gr.Error, which render HTML: quoted errors such as "<urlopen error …>" would
    vanish from the page (with the rest of the message) as an unknown tag."""
    return html.escape(message, quote=False)


def keep_one(new, tab: str):
    """When one of two alternative inputs gets a value, clear the other and show its tab."""
    if not new or (isinstance(new, str) and not new.strip()):
        return gr.update(), gr.update()
    return None, gr.Tabs(selected=tab)


def readable_picture(preprocess: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """gr.Image.preprocess, but a picture PIL cannot open (empty, damaged, not a picture) gets lipsync's own
    message instead of gradio's silent failure; and PIL knows the formats lipsync reads (HEIC) before gradio opens
    the upload."""
    from lipsync import picture

    @functools.wraps(preprocess)
    def checked(payload: Any) -> Any:
        picture.register_plugins()
        try:
            return preprocess(payload)
        except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
            raise gr.Error(plain(picture_problem(getattr(payload, "path", None), exc))) from exc

    return checked


def viewable_picture(path: Optional[str]) -> Any:
    """An uploaded HEIC photo, which most browsers cannot show, as a JPEG beside it (upright, as lipsync reads it),
    so the page shows the face it will animate; anything else is left as it is."""
    from PIL import Image

    from lipsync import picture, video

    if not path or not picture.is_heif(path):
        return gr.update()
    frame = picture.read_picture(path)
    if frame is None:
        return gr.update()  # the run says what is wrong with it
    shown = Path(path).with_suffix(".jpg")
    Image.fromarray(video.fit(frame)[..., ::-1]).save(shown, **VIEWABLE_JPEG)  # as large as a run would use
    return str(shown)


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
