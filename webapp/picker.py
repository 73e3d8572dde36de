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

HEADING = "**Who speaks?** {count} faces found: click one (none chosen: the most confident face speaks)"
ONE_HEADING = "**Who speaks?** 1 face found"
CACHED_FACES = 8  # uploads whose faces are kept (thumbnails of 96 px: a few kB each)


def faces_of(face_image: Optional[str], face_video: Optional[str], detector: str,
             resize_factor: float) -> Tuple[dict, str, gr.Gallery, None]:  # fmt: skip
    """The picker (shown only when there are faces): its heading and the faces of the face given, nothing
    chosen yet."""
    items = thumbnails(face_image or face_video, detector, int(resize_factor or 1))
    heading = ONE_HEADING if len(items) == 1 else HEADING.format(count=len(items))
    return gr.update(visible=bool(items)), heading, gr.Gallery(value=items or None, selected_index=None), None


@functools.lru_cache(maxsize=CACHED_FACES)
def thumbnails(face: Optional[str], detector: str, resize_factor: int) -> List[Tuple[object, str]]:
    """(RGB picture, "face n") for each face, left to right; [] without a face or when the file cannot be read
    (making the video says why). Cached: a picture and a video both change when one replaces the other."""
    if not face:
        return []
    import lipsync

    try:
        options = LipSyncOptions(face_detector=detector or "sfd", resize_factor=resize_factor)
        found = lipsync.find_faces(face, options)
    except LipSyncError as exc:  # the run will say it, as an error the visitor can act on
        log.info("no faces to pick from: %s", exc)
        return []
    except Exception:  # the picker is a help: the form still works without it
        log.exception("the face picker failed")
        return []
    return [(face.thumbnail, f"face {face.index}") for face in found]


def chosen(event: gr.SelectData) -> int:
    """The face clicked: its face_index."""
    return int(event.index)


def automatic() -> Tuple[None, gr.Gallery]:
    """No face chosen: the most confident one speaks."""
    return None, gr.Gallery(selected_index=None)
