"""The files lipsync writes, by the output's suffix: each one's container and codecs.

H.264 with AAC (an .mp4, a QuickTime .mov for editors, a Matroska .mkv) plays everywhere; a .webm carries VP9 with
Opus, the web's open pair. The codecs' arguments are lipsync.encoding's; this module only names them, so that the
paths are checked before anything is decoded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple, Union

from .errors import LipSyncError

H264_AAC = ("h264", "aac")  # the codecs inside, by ffprobe's names for them
VP9_OPUS = ("vp9", "opus")
FASTSTART = ("movflags", "+faststart")  # the index first, so that the file plays while it loads


@dataclass(frozen=True)
class Container:
    """One kind of output file: ffmpeg's muxer options (its -f among them), the codecs inside, and whether it is
    made of ISO base media boxes (an mp4's or a QuickTime file's ftyp, moov, mdat), else Matroska's elements."""

    name: str
    muxer: Tuple[Tuple[str, str], ...]
    codecs: Tuple[str, str]
    boxes: bool = True


MP4 = Container("mp4", (FASTSTART, ("f", "mp4")), H264_AAC)
CONTAINERS: Dict[str, Container] = {
    ".mp4": MP4,
    ".mov": Container("QuickTime", (FASTSTART, ("f", "mov")), H264_AAC),
    ".mkv": Container("Matroska", (("f", "matroska"),), H264_AAC, boxes=False),
    ".webm": Container("WebM", (("f", "webm"),), VP9_OPUS, boxes=False),
}
SUFFIXES = tuple(CONTAINERS)
SUFFIX_LIST = ", ".join(SUFFIXES[:-1]) + f" or {SUFFIXES[-1]}"  # for messages: ".mp4, .mov, .mkv or .webm"


def container_for(path: Union[str, Path]) -> Container:
    """The container an output name asks for; LipSyncError naming the ones there are."""
    found = CONTAINERS.get(Path(path).suffix.lower())
    if found is None:
        raise LipSyncError(f"the output must be a {SUFFIX_LIST} file (got {Path(path).name})")
    return found
