"""Option values written as text (command-line words, manifest cells) → LipSyncOptions values, parsed one way
for every front end: the CLI's flags and the batch manifest's columns."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Dict, Sequence, Tuple

from .errors import LipSyncError
from .options import LipSyncOptions

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
NO_BOX = (-1, -1, -1, -1)  # the seed's "no box" value: detect the face
DETECTOR_ALIASES = {"s3fd": "sfd", "blazeface": "haar"}  # s3fd = sfd; blazeface, the seed's second, is served by haar
QUAD_FIELDS = ("pads", "crop", "box")  # four whole numbers each
QUAD_SEPARATORS = (",", ";")  # also accepted between the four numbers, besides spaces

_DEFAULTS = LipSyncOptions()
_KINDS: Dict[str, type] = {f.name: type(getattr(_DEFAULTS, f.name)) for f in fields(LipSyncOptions)}


def bool_value(text: str) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case); ValueError otherwise."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def quad_value(text: str) -> Tuple[int, int, int, int]:
    """Four whole numbers separated by spaces (as on the command line) or commas; ValueError otherwise."""
    for separator in QUAD_SEPARATORS:
        text = text.replace(separator, " ")
    words = text.split()
    if len(words) != 4:
        raise ValueError(f"expected four whole numbers, got {len(words)}")
    return tuple(int(word) for word in words)  # type: ignore[return-value]


def detector_value(name: str) -> str:
    """A face detector's name, with the seed's other spellings mapped onto ours."""
    word = name.strip().lower()
    return DETECTOR_ALIASES.get(word, word)


def box_value(quad: Sequence[int]):
    """A --box as given: None for the seed's -1 -1 -1 -1 (detect), else the four numbers."""
    return None if tuple(quad) == NO_BOX else tuple(quad)


def option_value(name: str, text: str) -> Any:
    """The value of LipSyncOptions field `name` written as `text`; LipSyncError naming what is wrong."""
    if name not in _KINDS:
        raise LipSyncError(f"{name!r} is not an option (options: {', '.join(_KINDS)})")
    try:
        return _parse(name, text)
    except ValueError as exc:
        raise LipSyncError(f"{name}: {exc}") from None


def _parse(name: str, text: str) -> Any:
    if name in QUAD_FIELDS:
        quad = quad_value(text)
        return box_value(quad) if name == "box" else quad
    if name == "face_detector":
        return detector_value(text)
    kind = _KINDS[name]
    if kind is bool:
        return bool_value(text)
    if kind in (int, float):
        try:
            return kind(text.strip())
        except ValueError:
            raise ValueError(f"expected a {'whole ' if kind is int else ''}number, got {text!r}") from None
    return text.strip()
