"""What a face or speech file holds: ffprobe's description (or, for a still picture, its decoded size)."""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from lipsync import animation, ffmpeg, picture
from lipsync.errors import LipSyncError
from lipsync.types import Frame

IMAGE_FPS = 25.0  # frame rate reported for a still picture: the reference's default --fps
FALLBACK_FPS = 25.0  # for a video that states no usable frame rate
PICTURE_DEMUXERS = ("image2", "image2pipe")  # ffmpeg's "*_pipe" demuxers are single pictures too
HDR_TRANSFERS = {"smpte2084": "HDR10/PQ", "arib-std-b67": "HLG"}  # ffprobe's color_transfer → what people call it
INTERLACED_FIELD_ORDERS = ("tt", "bb", "tb", "bt")  # ffprobe's field_order of interlaced video (else progressive)
# A pixel shown this many times wider than tall (or narrower) at most: anamorphic lenses squeeze 2x, a DVD's 16:9 PAL
# frame 1.42x; a ratio beyond it is a damaged header, and the pixels are taken as square
MAX_PIXEL_ASPECT = 4


@dataclass(frozen=True)
class MediaInfo:
    """What the pipeline needs to know about an input file.

    width/height are the displayed size (rotation metadata applied), i.e. the size of the frames that
    `read_frames` yields. frame_count is exact when the container states it, else estimated from the
    duration; the pipeline should trust the count it actually reads. A still picture reports
    fps=IMAGE_FPS, frame_count=1, duration=0 and has_video=True (it is a picture stream).
    """

    path: Path
    is_image: bool
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float  # seconds; 0 when unknown or a still picture
    has_video: bool
    has_audio: bool
    rotation: int = 0  # display rotation, degrees counter-clockwise (0/90/180/270); ffmpeg undoes it on decode
    audio_duration: float = 0.0  # seconds of the first audio stream; 0 when none or unknown
    audio_sample_rate: int = 0  # Hz of the first audio stream; 0 when none
    audio_channels: int = 0  # of the first audio stream; 0 when none or unknown
    # A picture's pixels as the probe decoded them (upright BGR): its reader hands them on instead of decoding the
    # file again. None for anything else, and once a run has taken them (so a long job does not keep two copies).
    picture: Frame | None = field(default=None, compare=False, repr=False)
    # An animation ffmpeg cannot decode (an animated WebP): when each of its frames starts, in seconds, and its last
    # frame's end; its reader decodes it with Pillow. None for anything ffmpeg reads.
    frame_starts: tuple[float, ...] | None = field(default=None, compare=False, repr=False)
    transfer: str = ""  # the video's transfer characteristic as ffprobe names it (smpte2084, arib-std-b67: HDR)
    # How much wider than tall each pixel is shown (its sample aspect ratio, after rotation): 64/45 for a DVD's 16:9
    # PAL frame of 720×576, shown at 1024×576; 1 for square pixels, pictures and videos that state none
    pixel_aspect: Fraction = Fraction(1)
    interlaced: bool = False  # each frame two fields a field apart in time (a camcorder's 1080i, broadcast, DV)

    @property
    def hdr(self) -> str:
        """The kind of HDR video this is ("HLG", "HDR10/PQ"), or "" for SDR and pictures."""
        return HDR_TRANSFERS.get(self.transfer, "")


# ---------------------------------------------------------------- probing


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise LipSyncError(f"{path} does not exist or is not a file")
    return path


def _ffprobe(path: Path) -> tuple[dict[str, Any] | None, str]:
    """ffprobe's JSON description (None when ffprobe cannot read the file), and what it said on stderr."""
    result = ffmpeg.run(ffmpeg.probe_args(path))
    said = ffmpeg.tail(result.stderr, path)
    if result.returncode != 0:
        return None, said
    data = json.loads(result.stdout or b"{}")
    return (data if data.get("streams") else None), said


def _first_stream(data: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """First stream of a kind; cover art attached to audio files is not a video."""
    for stream in data.get("streams", []):
        if stream.get("codec_type") == kind and not stream.get("disposition", {}).get("attached_pic"):
            return stream
    return None


def _cover_art(path: Path, data: dict[str, Any]) -> Frame | None:
    """The picture an audio file carries as its cover (an mp3's or m4a's artwork), if any: a podcast's cover can
    speak its episode."""
    if not any(stream.get("disposition", {}).get("attached_pic") for stream in data.get("streams", [])):
        return None
    return picture.read_picture(path)  # ffmpeg's first video stream: the cover


def _one_frame(data: dict[str, Any]) -> bool:
    """True when the video stream says it holds exactly one frame (a still GIF, a one-frame clip). Without sound
    that is a picture in all but name: it runs as one (at --fps, a still's speed) instead of at the rate its
    container guesses (10 frames/s for a GIF, which makes the mouth move at 10 frames/s)."""
    stream = _first_stream(data, "video")
    return stream is not None and int(_number(stream.get("nb_frames"))) == 1


def _is_picture_format(data: dict[str, Any]) -> bool:
    """True when ffprobe's content sniffing found a single-picture format (png_pipe, jpeg_pipe, image2, ...)."""
    name = data.get("format", {}).get("format_name", "")
    return name in PICTURE_DEMUXERS or name.endswith("_pipe")


def _ratio(text: str | None) -> float:
    """'30000/1001' -> 29.97; 0.0 for missing or '0/0'."""
    try:
        value = Fraction(text or "0")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(value) if value > 0 else 0.0


def _number(text: Any) -> float:
    try:
        return max(float(text), 0.0)
    except (TypeError, ValueError):
        return 0.0


def _rotation(stream: dict[str, Any]) -> int:
    """Display rotation in degrees counter-clockwise, from the display matrix (or the older `rotate` tag)."""
    try:
        for side_data in stream.get("side_data_list", []):
            if "rotation" in side_data:
                return round(float(side_data["rotation"])) % 360
        return round(-float(stream.get("tags", {}).get("rotate", 0))) % 360  # ffmpeg < 5: clockwise tag
    except (TypeError, ValueError):
        return 0


def _pixel_aspect(stream: dict[str, Any], rotation: int) -> Fraction:
    """The video's sample aspect ratio (ffprobe's "64:45"), turned with the picture; 1 when it states none."""
    try:
        aspect = Fraction(str(stream.get("sample_aspect_ratio", "1:1")).replace(":", "/"))
    except (ValueError, ZeroDivisionError):
        return Fraction(1)
    if not 1 / MAX_PIXEL_ASPECT <= aspect <= MAX_PIXEL_ASPECT:  # 0:1 is ffprobe's "unknown"
        return Fraction(1)
    return 1 / aspect if rotation in (90, 270) else aspect


def _video_fps(stream: dict[str, Any], duration: float) -> float:
    """Average frame rate (the mean of a variable-rate video): ffprobe's, else its frame count over its duration,
    else the nominal rate (only a guess: 100/s for a two-frame GIF at 10 frames/s, whose average ffprobe omits)."""
    frames = int(_number(stream.get("nb_frames")))
    for fps in (_ratio(stream.get("avg_frame_rate")), frames / duration if duration else 0.0,
                _ratio(stream.get("r_frame_rate"))):
        if fps > 0:
            return fps
    return FALLBACK_FPS


def from_ffprobe(path: Path, data: dict[str, Any]) -> MediaInfo:
    """MediaInfo for a video or audio file from ffprobe's JSON (`ffmpeg.probe_args`' output), as it is: no picture
    or cover art is looked for."""
    video, audio = _first_stream(data, "video"), _first_stream(data, "audio")
    container_duration = _number(data.get("format", {}).get("duration"))
    audio_duration = (_number(audio.get("duration")) or container_duration) if audio else 0.0
    audio_rate = int(_number(audio.get("sample_rate"))) if audio else 0
    channels = int(_number(audio.get("channels"))) if audio else 0
    if video is None:
        return MediaInfo(path, False, 0, 0, 0.0, 0, container_duration, False, audio is not None,
                         audio_duration=audio_duration, audio_sample_rate=audio_rate, audio_channels=channels)
    duration = _number(video.get("duration")) or container_duration
    fps = _video_fps(video, duration)
    frames = int(_number(video.get("nb_frames"))) or max(round(duration * fps), 1)
    rotation = _rotation(video)
    width, height = int(video.get("width", 0)), int(video.get("height", 0))
    if rotation in (90, 270):
        width, height = height, width
    return MediaInfo(path, False, width, height, fps, frames, duration, True, audio is not None,
                     rotation, audio_duration, audio_rate, channels, transfer=video.get("color_transfer", ""),
                     pixel_aspect=_pixel_aspect(video, rotation),
                     interlaced=video.get("field_order") in INTERLACED_FIELD_ORDERS)


def _picture_info(path: Path, frame: Frame) -> MediaInfo:
    height, width = frame.shape[:2]
    return MediaInfo(path, True, width, height, IMAGE_FPS, 1, 0.0, True, False, picture=frame)


def _animation_info(path: Path, clip: animation.Animation) -> MediaInfo:
    """An animation Pillow decodes, described as the silent video it is (at its mean frame rate)."""
    return MediaInfo(path, False, clip.width, clip.height, clip.frames / clip.seconds, clip.frames, clip.seconds,
                     True, False, frame_starts=clip.starts)


def _heif_picture(path: Path) -> Frame:
    """A HEIC/HEIF photo's pixels; LipSyncError when they cannot be decoded, saying why."""
    frame = picture.read_picture(path)
    if frame is not None:
        return frame
    if not picture.reads_heif():
        raise LipSyncError(f"{path.name} is a HEIC photo, and reading one needs the pillow-heif package "
                           "(pip install pillow-heif); or save the photo as JPEG")
    raise LipSyncError(f"could not decode the HEIC photo {path.name}; is the file complete?")


def _wav_info(path: Path) -> MediaInfo | None:
    """A plain PCM WAV's streams from its header (the `wave` module), sparing an ffprobe process for the most
    common speech file; None for anything else (other WAV codings, a header promising more than the file
    holds, not a WAV at all), which ffprobe then describes."""
    try:
        with wave.open(str(path), "rb") as wav:
            rate, channels, frames = wav.getframerate(), wav.getnchannels(), wav.getnframes()
            size = frames * channels * wav.getsampwidth()
    except (wave.Error, EOFError, OSError, ValueError):
        return None
    if rate <= 0 or channels <= 0 or size > path.stat().st_size:
        return None
    seconds = frames / rate
    return MediaInfo(path, False, 0, 0, 0.0, 0, seconds, False, True, audio_duration=seconds,
                     audio_sample_rate=rate, audio_channels=channels)


def probe(path: str | Path, *, require_video: bool = True) -> MediaInfo:
    """Describe a picture, video or (with require_video=False) audio file; LipSyncError if unusable.

    Pictures are recognised by content, not by extension (a PNG or JPEG by its signature, which spares starting
    ffprobe; others by ffprobe's sniffing, then Pillow or ffmpeg), and are decoded once here so width/height
    honour EXIF orientation; the decoded pixels come with the description (MediaInfo.picture), so reading the
    picture's frame decodes nothing again. A video stream of one frame without sound (a still GIF) is described
    as a picture too, and an animated WebP (which ffmpeg cannot decode) as a silent video that Pillow decodes. A
    HEIC photo is decoded by Pillow (pillow-heif) before ffprobe sees it. A plain PCM WAV is read from its header,
    also without ffprobe.
    """
    path = _existing(path)
    frame = picture.read_common_picture(path)
    if frame is not None:
        return _picture_info(path, frame)
    info = _wav_info(path)
    if info is not None:
        if require_video:
            raise LipSyncError(f"{path.name} has no video stream — the face must be a picture or a video")
        return info
    clip = animation.describe(path)
    if clip is not None:
        return _animation_info(path, clip)
    if picture.is_heif(path):
        return _picture_info(path, _heif_picture(path))
    data, said = _ffprobe(path)
    if data is None or _is_picture_format(data):
        frame = picture.read_picture(path)
        if frame is not None:
            return _picture_info(path, frame)
        if data is not None:
            raise LipSyncError(f"could not decode the picture {path.name}; is the file complete?")
    if data is None:
        kind = "a picture or a video" if require_video else "an audio or video file"
        raise LipSyncError(f"{path.name} cannot be read as {kind} (ffmpeg: {said}); is the file complete, "
                           "and really what its name says?")
    info = from_ffprobe(path, data)
    if require_video and not info.has_video:
        cover = _cover_art(path, data)
        if cover is None:
            raise LipSyncError(f"{path.name} has no video stream — the face must be a picture or a video")
        return _picture_info(path, cover)
    if not info.has_audio and _one_frame(data):
        frame = picture.read_picture(path)
        if frame is not None:
            return _picture_info(path, frame)
    return info
