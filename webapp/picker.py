"""The face picker: after a picture or video is given, its faces as numbered thumbnails to click; the face clicked
is the job's face_index (none clicked: the most confident face)."""

from __future__ import annotations

import functools
import logging
from typing import List, Optional, Tuple

import gradio as gr

from lipsync.errors import LipSyncError
from lipsync.options import LipSyncOptions

log = logging.getLogger("lipsync.app")

LABEL = "Who speaks: {count} found. Click one, or leave none chosen for the most confident face"
ONE_LABEL = "Who speaks: 1 face found"
CACHED_FACES = 8  # uploads whose faces are kept (thumbnails of 96 px: a few kB each)


def faces_of(face_image: Optional[str], face_video: Optional[str], detector: str,
             resize_factor: float) -> Tuple[dict, gr.Gallery, None]:  # fmt: skip
    """The picker (shown only when there are faces) with the faces of the face given, nothing chosen yet."""
    items = thumbnails(face_image or face_video, detector, int(resize_factor or 1))
    label = ONE_LABEL if len(items) == 1 else LABEL.format(count=f"{len(items)} faces")
    gallery = gr.Gallery(value=items or None, selected_index=None, label=label)
    return gr.update(visible=bool(items)), gallery, None


@functools.lru_cache(maxsize=CACHED_FACES)  # a picture and a video both change when one replaces the other
def thumbnails(face: Optional[str], detector: str, resize_factor: int) -> List[Tuple[object, str]]:
    """(RGB picture, "face n") for each face, left to right; [] without a face or when the file cannot be read
    (making the video says why)."""
    if not face:
        return []
    import lipsync

    try:
        options = LipSyncOptions(face_detector=detector or "sfd", resize_factor=resize_factor)
        found = lipsync.find_faces(face, options)
    except LipSyncError as exc:
        log.info("no faces to pick from: %s", exc)
        return []
    return [(face.thumbnail, f"face {face.index}") for face in found]


def chosen(event: gr.SelectData) -> int:
    """The face clicked: its face_index."""
    return int(event.index)


def automatic() -> Tuple[None, gr.Gallery]:
    """No face chosen: the most confident one speaks."""
    return None, gr.Gallery(selected_index=None)
