"""Which face is the one followed: numbered left to right in the first frame with faces (face_index), then
the nearest to where it was."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from .detectors import Scored
from .types import Box

# The followed face, in face sizes (the larger side of its last box) between its centre and a candidate's:
FOLLOW_RADIUS = 0.75  # in a crop around it: a whole face of its size in the crop lies this close, a neighbour further
REACQUIRE_RADIUS = 1.0  # in the whole frame, once the crop lost it: the nearest face this close is it
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


@dataclass(frozen=True)
class FirstFaces:
    """The faces of the first frame that has faces, numbered from 0 left to right by their box's centre."""

    frame: int
    faces: Tuple[Scored, ...]


def nearest(faces: Sequence[Tuple[Optional[Box], float]], followed: Box, radius: float) -> Optional[Box]:
    """The face whose centre is nearest the followed box's, if within `radius` face sizes of it."""
    size = max(followed[2] - followed[0], followed[3] - followed[1], 1)
    cx, cy = (followed[0] + followed[2]) / 2, (followed[1] + followed[3]) / 2
    best, best_distance = None, radius
    for box, _ in faces:
        if box is None:
            continue
        distance = max(abs((box[0] + box[2]) / 2 - cx), abs((box[1] + box[3]) / 2 - cy)) / size
        if distance <= best_distance and (best is None or distance < best_distance):
            best, best_distance = box, distance
    return best


def index_beyond(index: int, count: int, frame: int) -> str:
    """The error for a face_index past the faces found."""
    wanted = ORDINALS[index] if index < len(ORDINALS) else f"number {index + 1}"
    faces = "1 face was" if count == 1 else f"{count} faces were"
    choices = "0" if count == 1 else f"0–{count - 1}"
    return (f"face_index {index} asks for the {wanted} face from the left, but only {faces} found in the first "
            f"frame with faces (frame {frame}); use {choices}, or leave it out for the most confident face")
