"""The face picker: after a picture or video is given, its faces as numbered thumbnails to click; the face clicked
is the job's face_index (none clicked: the most confident face). A picture in which no face is found (a drawing
the detectors miss), or a video's first frame, is clicked on instead: above the eyebrows, then the chin; those two
clicks are the face box."""

from __future__ import annotations

import functools
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import gradio as gr
import numpy as np

from lipsync.errors import LipSyncError
from lipsync.options import LipSyncOptions

log = logging.getLogger("lipsync.app")

HEADING = "**Who speaks?** {count} faces found: click one (none chosen: the most confident face speaks)"
ONE_HEADING = "**Who speaks?** 1 face found"
NO_FACE_HEADING = ("**No face found.** Show where it is: in the picture above, click just above the eyebrows, "
                   "then the bottom of the chin. (Or try the other face detector under Advanced options.)")
NO_FACE_VIDEO_HEADING = ("**No face found.** Show where it is: in the video's first frame below, click just above the "
                         "eyebrows, then the bottom of the chin; the face box then follows the face from frame to "
                         "frame. (Or try the other face detector under Advanced options.)")
CHIN_HEADING = "**Now click the bottom of the chin.** (Above the eyebrows: x {x}, y {y}.)"
BOX_HEADING = ("**Face box set: {box}** (y1 y2 x1 x2, under Advanced options): the face below. Click above the "
               "eyebrows, then the chin, to place it again.")
BOX_LABEL = "face box"  # the clicked box's thumbnail, where found faces show theirs
TOO_CLOSE_HEADING = ("**The two clicks are {apart} px apart.** Click just above the eyebrows, then the bottom of the "
                     "chin, at least {least} px below.")
CACHED_FACES = 8  # uploads whose faces are kept (thumbnails of 96 px: a few kB each)
# A face box from two clicks: from above the eyebrows down to the chin, as tall as a detector's box, and as wide as
# it is tall (a detector's box of a face seen from the front is about square)
FACE_WIDTH_PER_HEIGHT = 1.0
MIN_CLICKED_FACE_PX = 16  # clicks closer than this (in the picture's pixels) are a slip, not a face
# The clicks' state: None when faces were found; else the first click ("top"), the box they set ("box") and the
# clicked picture's and the run's frames' (width, height) ("sizes")
Clicks = Optional[Dict[str, Optional[list]]]


def faces_of(face_image: Optional[str], face_video: Optional[str], detector: str, resize_factor: float,
             box: Optional[str] = None,
             clicks: Clicks = None) -> Tuple[dict, str, gr.Gallery, dict, None, object, Clicks, gr.Image]:  # fmt: skip
    """The picker (shown when there are faces, or none to click instead): its heading, the faces of the face given
    (nothing chosen yet), the automatic button, the clicks' state (waiting for clicks on a picture, or on a video's
    first frame, without a face found) and that frame. A face box the clicks set for the last face is emptied."""
    factor = int(resize_factor or 1)
    items = thumbnails(face_image or face_video, detector, factor)
    placed = clicks.get("box") if clicks else None
    emptied = "" if placed and box == " ".join(map(str, placed)) else gr.skip()
    waiting, still = (None, None) if items else _to_click(face_image, face_video, factor)
    if waiting:
        heading = NO_FACE_HEADING if face_image else NO_FACE_VIDEO_HEADING
    else:
        heading = ONE_HEADING if len(items) == 1 else HEADING.format(count=len(items))
    gallery = gr.Gallery(value=items or None, selected_index=None, visible=bool(items))
    return (gr.update(visible=bool(items or waiting)), heading, gallery, gr.update(visible=bool(items)), None,
            emptied, waiting, gr.Image(value=still, visible=still is not None))


def _to_click(face_image: Optional[str], face_video: Optional[str],
              resize_factor: int) -> Tuple[Clicks, Optional[np.ndarray]]:  # fmt: skip
    """The clicks' state waiting for the first click, with the sizes the clicks are scaled by, and for a video the
    picture of its first frame to click on (RGB, stretched as a player shows its pixels); (None, None) when the
    file cannot be read (the run will say why)."""
    try:
        if face_image:
            return _waiting(*picture_sizes(face_image, resize_factor)), None
        if face_video:
            still, frame = first_frame_shown(face_video, resize_factor)
            return _waiting((still.shape[1], still.shape[0]), frame), still
    except LipSyncError as exc:
        log.info("no face box to click: %s", exc)
    return None, None


def _waiting(shown: Tuple[int, int], frame: Tuple[int, int]) -> Clicks:
    """The clicks' state before the first click: the clicked picture's (width, height) and the run's frames'."""
    return {"top": None, "box": None, "sizes": [list(shown), list(frame)]}


def first_frame_shown(face_video: str, resize_factor: int) -> Tuple[np.ndarray, Tuple[int, int]]:
    """A video's first frame to click on (RGB, its pixels stretched as a player shows them) and the (width, height)
    of the run's frames."""
    from lipsync.picker import as_shown, first_frame

    frame, pixel_aspect = first_frame(face_video, LipSyncOptions(resize_factor=resize_factor))
    height, width = frame.shape[:2]
    return as_shown(frame, pixel_aspect), (width, height)


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


def chosen(event: gr.SelectData, clicks: Clicks = None) -> object:
    """The face clicked: its face_index (none for the thumbnail of a box set by clicks: it is no face found)."""
    return gr.skip() if clicks is not None else int(event.index)


def automatic() -> Tuple[None, gr.Gallery]:
    """No face chosen: the most confident one speaks."""
    return None, gr.Gallery(selected_index=None)


def clicked(event: gr.SelectData, picture: Optional[str], clicks: Clicks) -> Tuple[object, object, Clicks, object]:
    """A click on the picture (or a video's first frame) while it waits for clicks: the first marks above the
    eyebrows, the second the chin and sets the face box, shown as the picker shows a face found (the heading says
    each step); other clicks change nothing."""
    if not clicks or not picture:
        return gr.skip(), gr.skip(), clicks, gr.skip()
    x, y = (int(v) for v in event.index)
    top = clicks.get("top")
    if top is None:
        return CHIN_HEADING.format(x=x, y=y), gr.skip(), {**clicks, "top": [x, y]}, gr.skip()
    shown, frame = (tuple(size) for size in clicks["sizes"])
    box = clicked_box(top, (x, y), shown, frame)  # type: ignore[arg-type]
    if box is None:
        heading = TOO_CLOSE_HEADING.format(apart=abs(y - top[1]), least=MIN_CLICKED_FACE_PX)
        return heading, gr.skip(), {**clicks, "top": None}, gr.skip()
    text = " ".join(map(str, box))
    seen = _box_thumbnail(picture, clicked_box(top, (x, y), shown, shown))  # type: ignore[arg-type]
    return BOX_HEADING.format(box=text), text, {**clicks, "top": None, "box": list(box)}, seen


def _box_thumbnail(face_image: str, box: Tuple[int, int, int, int]) -> object:
    """The picker's gallery holding the clicked box (y1 y2 x1 x2 in the picture's pixels) as a face thumbnail."""
    from lipsync.picker import thumbnail
    from lipsync.picture import read_image

    y1, y2, x1, x2 = box
    try:
        picture = read_image(face_image)
    except LipSyncError as exc:  # a picture only ffmpeg decodes: the heading states the box all the same
        log.info("no thumbnail of the clicked box: %s", exc)
        return gr.skip()
    return gr.Gallery(value=[(thumbnail(picture, (x1, y1, x2, y2)), BOX_LABEL)], selected_index=None, visible=True)


def picture_sizes(face_image: str, resize_factor: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """The picture's (width, height) as the page shows it (turned as its EXIF says) and as a run's frames are
    (after the resize factor and the fit to what players decode): the face box is in the frames' pixels."""
    from lipsync import geometry, video

    info = video.probe(face_image)
    return (info.width, info.height), geometry.frame_size(info, LipSyncOptions(resize_factor=resize_factor))


def clicked_box(top: Sequence[int], chin: Sequence[int], shown: Tuple[int, int],
                frame: Tuple[int, int]) -> Optional[Tuple[int, int, int, int]]:  # fmt: skip
    """The face box (y1 y2 x1 x2, in the frame's pixels) from a click above the eyebrows and one on the chin (in
    the shown picture's pixels; either order): from one to the other, FACE_WIDTH_PER_HEIGHT as wide, centred
    between them, inside the frame. None when the clicks are less than MIN_CLICKED_FACE_PX apart."""
    (x_a, y_a), (x_b, y_b) = top, chin
    if abs(y_b - y_a) < MIN_CLICKED_FACE_PX:
        return None
    scale_x, scale_y = frame[0] / shown[0], frame[1] / shown[1]
    y1, y2 = sorted((y_a * scale_y, y_b * scale_y))
    half = (y2 - y1) * FACE_WIDTH_PER_HEIGHT / 2 * scale_x / scale_y
    centre = (x_a + x_b) / 2 * scale_x
    width, height = frame
    x1, x2 = max(centre - half, 0), min(centre + half, width)
    return round(y1), min(round(y2), height), round(x1), round(x2)
