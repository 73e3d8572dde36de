"""Picture and video I/O: probe inputs, stream frames in through ffmpeg, encode frames + audio out."""

from __future__ import annotations

import json
import os
import math
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Iterator

import cv2
import numpy as np

from lipsync import native
from lipsync.errors import LipSyncError
from lipsync.types import Frame


FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
FFMPEG_LOG_LEVEL = "error"  # only errors reach stderr, so its last lines name the cause
STDERR_TAIL_LINES = 3  # last lines of ffmpeg stderr quoted (on one line) in a LipSyncError
FFMPEG_LINE_PREFIX = re.compile(r"^(\[[^\]]* @ 0x[0-9a-f]+\]\s*)?((file:)?/[^:]*:\s*)?")  # "[mov @ 0x5f…] ", "file:/a/b.mp4: "

IMAGE_FPS = 25.0  # frame rate reported for a still picture: the reference's default --fps
FALLBACK_FPS = 25.0  # for a video that states no usable frame rate
RATE_MAX_DENOMINATOR = 100_000  # float fps -> exact ffmpeg rational (30000/1001 survives)
PICTURE_DEMUXERS = ("image2", "image2pipe")  # ffmpeg's "*_pipe" demuxers are single pictures too
EXIF_ORIENTATION_TAG = 0x0112
DECODER_CHATTER = re.compile(r"^(libpng (error|warning)|Corrupt JPEG|Premature end of JPEG|\[ *WARN:)")
ALPHA_BACKGROUND = 1.0  # transparent pixels go on white: cut-out portraits are usually shown on white

VIDEO_CODEC = "libx264"
VIDEO_CRF = 18  # near-transparent quality; the regenerated mouth must not smear
VIDEO_PRESET = "veryfast"  # ~3x faster than "medium" at a few % more bits; encoding stays cheap next to the model
VIDEO_PIX_FMT = "yuv420p"  # what every player and browser decodes
COLOUR_MATRIX = "bt709"  # convert and tag explicitly so players don't guess (and shift colours)
AUDIO_CODEC = "aac"
AUDIO_BITRATE = "192k"
MAX_AUDIO_RATE = 48000  # Hz; higher source rates are resampled down, lower ones kept as they are
MAX_AUDIO_CHANNELS = 2  # surround sound is mixed down to stereo, which every browser plays
MAX_FRAME_SIDE = 4096  # px; larger pictures and videos are scaled down to fit …
MAX_FRAME_PIXELS = 3840 * 2160  # … and to at most 4K UHD's area: H.264 level 5.1, what hardware decoders accept


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


# ---------------------------------------------------------------- argument builders (pure)


def file_arg(path: str | Path) -> str:
    """ffmpeg input/output name for a local path: `file:` so names like `-x.mp4` or `a:b.mp4` stay paths."""
    return f"file:{os.fspath(path)}"


def rate_arg(fps: float) -> str:
    """A frame rate as an exact ffmpeg rational ("25", "30000/1001")."""
    return str(Fraction(fps).limit_denominator(RATE_MAX_DENOMINATOR))


def probe_args(path: str | Path) -> list[str]:
    """ffprobe command that describes every stream and the container as JSON."""
    return [FFPROBE, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", file_arg(path)]


def _ffmpeg_head() -> list[str]:
    return [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", FFMPEG_LOG_LEVEL]


def read_args(path: str | Path, fps: float) -> list[str]:
    """ffmpeg command streaming the first video stream as raw BGR frames at a constant `fps` to stdout.

    ffmpeg applies rotation metadata itself; the fps filter turns variable-rate input into frames
    at exactly i/fps (duplicating or dropping as timestamps demand) and leaves constant-rate input alone.
    """
    return [*_ffmpeg_head(), "-i", file_arg(path), "-map", "0:v:0", "-vf", f"fps={rate_arg(fps)}",
            "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]


def picture_args(path: str | Path) -> list[str]:
    """ffmpeg command re-encoding the first picture of a file as PNG on stdout (for formats OpenCV lacks)."""
    return [*_ffmpeg_head(), "-i", file_arg(path), "-map", "0:v:0", "-frames:v", "1",
            "-c:v", "png", "-f", "image2pipe", "pipe:1"]


def _video_filters(width: int, height: int, hold_last_frame: bool) -> str:
    """Filter chain for the writer: pad odd sizes by one smeared pixel, optionally hold the last frame, to yuv."""
    filters = []
    if width % 2 or height % 2:
        filters.append(f"pad={width + width % 2}:{height + height % 2}")
        filters.append(f"fillborders=right={width % 2}:bottom={height % 2}:mode=smear")
    if hold_last_frame:
        filters.append("tpad=stop=-1:stop_mode=clone")  # -t cuts it at the audio's end
    filters.append(f"scale=out_color_matrix={COLOUR_MATRIX}:out_range=tv")
    filters.append(f"format={VIDEO_PIX_FMT}")
    return ",".join(filters)


def write_args(
    output: str | Path,
    *,
    width: int,
    height: int,
    fps: float,
    audio: str | Path | None = None,
    audio_duration: float = 0.0,
    audio_sample_rate: int = 0,
    audio_channels: int = 0,
    crf: int = VIDEO_CRF,
    preset: str = VIDEO_PRESET,
) -> list[str]:
    """ffmpeg command encoding raw BGR frames from stdin, plus the first audio stream of `audio`, to mp4.

    With a known audio duration the video holds its last frame and the output ends exactly at the
    audio's end (`-t`), which `-shortest` does not guarantee with piped video.
    """
    timed = audio is not None and audio_duration > 0
    args = [*_ffmpeg_head(), "-y",
            "-f", "rawvideo", "-pix_fmt", "bgr24", "-video_size", f"{width}x{height}",
            "-framerate", rate_arg(fps), "-i", "pipe:0"]
    if audio is not None:
        args += ["-i", file_arg(audio), "-map", "0:v:0", "-map", "1:a:0"]
    args += ["-vf", _video_filters(width, height, hold_last_frame=timed),
             "-c:v", VIDEO_CODEC, "-preset", preset, "-crf", str(crf), "-pix_fmt", VIDEO_PIX_FMT,
             "-colorspace", COLOUR_MATRIX, "-color_primaries", COLOUR_MATRIX, "-color_trc", COLOUR_MATRIX,
             "-color_range", "tv"]
    if audio is not None:
        args += ["-c:a", AUDIO_CODEC, "-b:a", AUDIO_BITRATE]
        if audio_sample_rate > MAX_AUDIO_RATE:
            args += ["-ar", str(MAX_AUDIO_RATE)]
        if audio_channels > MAX_AUDIO_CHANNELS:
            args += ["-ac", str(MAX_AUDIO_CHANNELS)]
    if timed:
        args += ["-t", f"{audio_duration:.6f}"]
    return [*args, "-movflags", "+faststart", "-f", "mp4", file_arg(output)]


# ---------------------------------------------------------------- process helpers


def _missing_ffmpeg(error: FileNotFoundError) -> LipSyncError:
    return LipSyncError(f"{error.filename or FFMPEG} was not found: install ffmpeg (e.g. `apt install ffmpeg`) "
                        "and make sure ffmpeg and ffprobe are on PATH")


def require_ffmpeg() -> None:
    """LipSyncError saying what to install when ffmpeg or ffprobe is not on PATH, before any work starts."""
    for tool in (FFMPEG, FFPROBE):
        if shutil.which(tool) is None:
            raise _missing_ffmpeg(FileNotFoundError(2, "not found", tool))


def _run(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run a short ffmpeg/ffprobe command to completion, output captured."""
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except FileNotFoundError as error:
        raise _missing_ffmpeg(error) from error


def _popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(args, **kwargs)
    except FileNotFoundError as error:
        raise _missing_ffmpeg(error) from error


def _tail(text: bytes | str) -> str:
    """Last lines of ffmpeg's stderr on one line, for an error message, without its "[demuxer @ 0x…]"
    and "file:/path:" prefixes (the message names the file)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [FFMPEG_LINE_PREFIX.sub("", line.strip()) for line in text.strip().splitlines() if line.strip()]
    return " | ".join(line for line in lines[-STDERR_TAIL_LINES:] if line) or "ffmpeg printed no error"


def _file_tail(handle: IO[bytes]) -> str:
    handle.seek(0)
    return _tail(handle.read())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill (if still running) and reap a child process, closing its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            try:
                stream.close()
            except BrokenPipeError:
                pass


# ---------------------------------------------------------------- probing


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise LipSyncError(f"{path} does not exist or is not a file")
    return path


def _ffprobe(path: Path) -> tuple[dict[str, Any] | None, str]:
    """ffprobe's JSON description (None when ffprobe cannot read the file), and what it said on stderr."""
    result = _run(probe_args(path))
    said = _tail(result.stderr)
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


def _video_fps(stream: dict[str, Any], duration: float) -> float:
    """Average frame rate (the mean of a variable-rate video), falling back to the nominal rate."""
    frames = int(_number(stream.get("nb_frames")))
    for fps in (_ratio(stream.get("avg_frame_rate")), _ratio(stream.get("r_frame_rate")),
                frames / duration if duration else 0.0):
        if fps > 0:
            return fps
    return FALLBACK_FPS


def _media_info(path: Path, data: dict[str, Any]) -> MediaInfo:
    """MediaInfo for a video or audio file from ffprobe's JSON."""
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
                     rotation, audio_duration, audio_rate, channels)


def _picture_info(path: Path, frame: Frame) -> MediaInfo:
    height, width = frame.shape[:2]
    return MediaInfo(path, True, width, height, IMAGE_FPS, 1, 0.0, True, False)


def probe(path: str | Path, *, require_video: bool = True) -> MediaInfo:
    """Describe a picture, video or (with require_video=False) audio file; LipSyncError if unusable.

    Pictures are recognised by content (ffprobe's sniffing, then OpenCV), not by extension, and are
    decoded once here so width/height honour EXIF orientation.
    """
    path = _existing(path)
    data, said = _ffprobe(path)
    if data is None or _is_picture_format(data):
        frame = _read_picture(path)
        if frame is not None:
            return _picture_info(path, frame)
        if data is not None:
            raise LipSyncError(f"could not decode the picture {path.name}; is the file complete?")
    if data is None:
        kind = "a picture or a video" if require_video else "an audio or video file"
        raise LipSyncError(f"{path.name} cannot be read as {kind} (ffmpeg: {said}); is the file complete, "
                           "and really what its name says?")
    info = _media_info(path, data)
    if require_video and not info.has_video:
        raise LipSyncError(f"{path.name} has no video stream — the face must be a picture or a video")
    return info


# ---------------------------------------------------------------- pictures


def _to_unit(image: np.ndarray) -> np.ndarray:
    """Image as float32 in [0, 1] whatever its depth."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)  # float pictures (TIFF) are taken as 0..1


def _to_uint8(image: np.ndarray) -> Frame:
    if image.dtype == np.uint8:
        return image
    return np.rint(_to_unit(image) * 255.0).astype(np.uint8)


def _tiff_orientation(tiff: bytes) -> int:
    """The Orientation tag (1-8) of IFD0 in a TIFF/EXIF block; 1 (as stored) when absent or unreadable."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    for entry in range(int.from_bytes(tiff[ifd:ifd + 2], order)):
        field = tiff[ifd + 2 + 12 * entry: ifd + 14 + 12 * entry]
        if len(field) == 12 and int.from_bytes(field[:2], order) == EXIF_ORIENTATION_TAG:
            value = int.from_bytes(field[8:10], order)
            return value if 1 <= value <= 8 else 1
    return 1


def _chunk(data: bytes, name: bytes, start: int, big_endian: bool) -> bytes | None:
    """Payload of the first chunk `name` in a PNG (size, type, data, CRC) or RIFF/WebP (type, size, data)."""
    order = "big" if big_endian else "little"
    position = start
    while position + 8 <= len(data):
        size_at, kind_at = (position, position + 4) if big_endian else (position + 4, position)
        size = int.from_bytes(data[size_at:size_at + 4], order)
        if data[kind_at:kind_at + 4] == name:
            return data[position + 8:position + 8 + size]
        position += 8 + size + (4 if big_endian else size % 2)  # PNG: CRC; RIFF: pad to even
    return None


def _exif_orientation(data: bytes) -> int:
    """EXIF orientation of a PNG or WebP file; 1 when none (OpenCV orients TIFF itself, even unchanged)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        exif = _chunk(data, b"eXIf", 8, big_endian=True)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        exif = _chunk(data, b"EXIF", 12, big_endian=False)
    else:
        exif = None
    if exif is None:
        return 1
    return _tiff_orientation(exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn/flip a stored picture the way EXIF orientation 1-8 says it is displayed."""
    if orientation in (2, 4, 5, 7):  # the mirrored ones: mirror left-right, then as 1, 3, 8, 6
        image = image[:, ::-1]
        orientation = {2: 1, 4: 3, 5: 8, 7: 6}[orientation]
    turns = {1: 0, 3: 2, 6: -1, 8: 1}[orientation]  # counter-clockwise quarter turns
    return np.rot90(image, turns)


def _composite(colour: np.ndarray, alpha: np.ndarray) -> Frame:
    """Alpha-composite BGR onto ALPHA_BACKGROUND, result uint8."""
    weight = _to_unit(alpha)[..., None]
    blended = _to_unit(colour) * weight + ALPHA_BACKGROUND * (1.0 - weight)
    return np.rint(blended * 255.0).astype(np.uint8)


def _imdecode(data: np.ndarray, flags: int) -> np.ndarray | None:
    """cv2.imdecode, with what libpng/libjpeg/OpenCV print about a damaged file kept off stderr (our error says it)."""
    with native.held_back(DECODER_CHATTER, "opencv"):
        return cv2.imdecode(data, flags)


def _decode_picture(data: np.ndarray) -> Frame | None:
    """Decode picture bytes to BGR uint8 with OpenCV, or None if OpenCV can't.

    IMREAD_COLOR applies EXIF orientation and turns grey/CMYK into BGR but drops alpha; IMREAD_UNCHANGED
    keeps alpha but ignores EXIF. So pictures with alpha are oriented here, the rest by OpenCV.
    """
    if data[:3].tobytes() != b"\xff\xd8\xff":  # JPEG has no alpha: skip straight to the colour decode
        raw = _imdecode(data, cv2.IMREAD_UNCHANGED)
        if raw is not None and raw.ndim == 3 and raw.shape[2] == 4:
            oriented = _orient(raw, _exif_orientation(data.tobytes()))
            return _composite(oriented[..., :3], oriented[..., 3])
    colour = _imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    return None if colour is None else _to_uint8(colour)


def _read_picture(path: Path) -> Frame | None:
    """Decode a picture with OpenCV, else through ffmpeg (as PNG); None when neither can."""
    try:
        frame = _decode_picture(np.fromfile(path, dtype=np.uint8))
    except cv2.error:
        frame = None
    if frame is None:
        result = _run(picture_args(path))
        if result.returncode == 0 and result.stdout:
            frame = _decode_picture(np.frombuffer(result.stdout, dtype=np.uint8))
    return frame


def read_image(path: str | Path) -> Frame:
    """A picture as BGR uint8: EXIF orientation applied, grey/CMYK to BGR, 16-bit scaled, alpha on white."""
    path = _existing(path)
    frame = _read_picture(path)
    if frame is None:
        raise LipSyncError(f"could not decode the picture {path}")
    return frame


# ---------------------------------------------------------------- reading frames


def _read_exactly(stream: IO[bytes], buffer: memoryview) -> int:
    """Fill `buffer` from `stream`; returns bytes read (less than its size only at end of stream)."""
    filled = 0
    while filled < len(buffer):
        count = stream.readinto(buffer[filled:])  # type: ignore[attr-defined]
        if not count:
            break
        filled += count
    return filled


def _stream_video(path: Path, info: MediaInfo) -> Iterator[Frame]:
    """Frames from one ffmpeg process; the process is killed and reaped however iteration ends."""
    shape = (info.height, info.width, 3)
    frame_bytes = info.height * info.width * 3
    with tempfile.TemporaryFile() as errors:
        proc = _popen(read_args(path, info.fps), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout is not None
        count = 0
        try:
            while True:
                frame = np.empty(shape, dtype=np.uint8)
                got = _read_exactly(proc.stdout, memoryview(frame).cast("B"))
                if got == 0:
                    break
                if got < frame_bytes:
                    raise LipSyncError(f"{path}: ffmpeg's frames are not {info.width}x{info.height} as probed")
                count += 1
                yield frame
            if proc.wait() != 0 or count == 0:
                raise LipSyncError(f"could not decode the video {path.name} (ffmpeg: {_file_tail(errors)})")
        finally:
            _stop(proc)


def read_frames(path: str | Path, info: MediaInfo) -> Iterator[Frame]:
    """Stream BGR uint8 frames (info.width x info.height): the picture once, or every video frame at info.fps.

    Nothing is held beyond the current frame; close the iterator to stop ffmpeg early.
    """
    path = Path(path)
    if info.is_image:
        yield read_image(path)
        return
    yield from _stream_video(path, info)


def transform(frame: Frame, resize_factor: int = 1, rotate: bool = False,
              crop: tuple[int, int, int, int] = (0, -1, 0, -1)) -> Frame:
    """The reference's per-frame edits, in its order: shrink by resize_factor, turn 90° clockwise, crop.

    crop is (y1, y2, x1, x2) in pixels of the resized, rotated frame; -1 means that edge of the frame.
    """
    if resize_factor > 1:
        height, width = frame.shape[:2]
        frame = cv2.resize(frame, (width // resize_factor, height // resize_factor))
    if rotate:
        frame = cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
    height, width = frame.shape[:2]
    y1, y2, x1, x2 = crop
    y1, x1 = max(y1, 0), max(x1, 0)
    y2 = height if y2 == -1 else y2
    x2 = width if x2 == -1 else x2
    if (y1, y2, x1, x2) != (0, height, 0, width):
        frame = np.ascontiguousarray(frame[y1:y2, x1:x2])
    if frame.size == 0:
        raise LipSyncError(f"--crop {crop} leaves nothing of a {width}x{height} frame")
    return frame


def fitted_size(width: int, height: int) -> tuple[int, int]:
    """The size a width x height frame is scaled down to (if at all) to stay within MAX_FRAME_SIDE/PIXELS."""
    scale = min(1.0, MAX_FRAME_SIDE / max(width, height, 1), math.sqrt(MAX_FRAME_PIXELS / max(width * height, 1)))
    if scale >= 1.0:
        return width, height
    return max(1, int(width * scale)), max(1, int(height * scale))


def fit(frame: Frame) -> Frame:
    """The frame, scaled down (area filter) if it is larger than video players decode."""
    height, width = frame.shape[:2]
    size = fitted_size(width, height)
    if size == (width, height):
        return frame
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------- frame cache for out-of-order playback


def pingpong_index(i: int, n: int) -> int:
    """Frame shown at step i when n frames play forward, then backward, and so on: 0..n-1, n-2..1, 0, 1, ..."""
    if n <= 0:
        raise ValueError(f"pingpong_index needs at least one frame, got n={n}")
    if n == 1:
        return 0
    period = 2 * n - 2
    step = i % period
    return step if step < n else period - step


class FrameCache:
    """Frames kept on disk (raw, in the run's temp dir) and read back by index, so RAM stays bounded.

    Pass 1 appends every frame; pass 2 reads frames in any order (ping-pong playback). Reads use pread,
    not a memory map, so cached frames never count towards the process's resident memory.
    Disk use is frames x height x width x 3 bytes.
    """

    def __init__(self, temp_dir: str | Path) -> None:
        handle, name = tempfile.mkstemp(prefix="frames-", suffix=".raw", dir=temp_dir)
        self.path = Path(name)
        self._file: IO[bytes] | None = os.fdopen(handle, "wb")
        self._shape: tuple[int, ...] | None = None
        self._count = 0
        self._flushed = True

    def append(self, frame: Frame) -> None:
        """Store the next frame; all frames must share one shape."""
        if self._file is None:
            raise ValueError("FrameCache is closed")
        if self._shape is None:
            self._shape = frame.shape
        if frame.shape != self._shape or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not match cached {self._shape} uint8")
        try:
            self._file.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
            self._flushed = False
        except OSError as error:
            raise LipSyncError(f"could not cache frames in {self.path.parent} ({error.strerror}); "
                               "free disk space or point TMPDIR at a larger disk") from error
        self._count += 1

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._count * int(np.prod(self._shape or (0,)))

    def __getitem__(self, index: int) -> Frame:
        """A writable copy of frame `index` (negative counts from the end), read with pread so RSS stays flat."""
        if not -self._count <= index < self._count:
            raise IndexError(f"frame {index} of {self._count}")
        assert self._file is not None and self._shape is not None
        if not self._flushed:
            self._file.flush()
            self._flushed = True
        size = int(np.prod(self._shape))
        data = os.pread(self._file.fileno(), size, (index % self._count) * size)
        return np.frombuffer(bytearray(data), np.uint8).reshape(self._shape)

    def close(self) -> None:
        """Delete the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FrameCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---------------------------------------------------------------- writing


class VideoWriter:
    """Encode BGR frames plus an audio track to an mp4 through one ffmpeg process.

    The file appears at `path` only when ffmpeg succeeded (it is written under a hidden temporary
    name next to it, then renamed), so a failed run leaves nothing behind, and `path` may even be one
    of the inputs. With audio, the output lasts exactly as long as the audio: the last frame is held
    if fewer frames came, extra frames are dropped. Use as a context manager; an exception aborts.
    """

    def __init__(self, path: str | Path, *, size: tuple[int, int], fps: float, audio: str | Path | None,
                 temp_dir: str | Path, audio_seconds: float | None = None, crf: int = VIDEO_CRF,
                 preset: str = VIDEO_PRESET) -> None:
        self.path = Path(path)
        self.width, self.height = size
        self.frames_written = 0
        self._stopped = False  # ffmpeg stopped reading: it reached the audio's end, or failed
        sound = probe(audio, require_video=False) if audio is not None else None
        if sound is not None and not sound.has_audio:
            raise LipSyncError(f"{audio} has no audio track")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.part")
        seconds = audio_seconds if audio_seconds is not None else (sound.audio_duration if sound else 0.0)
        args = write_args(self._partial, width=self.width, height=self.height, fps=fps, audio=audio,
                          audio_duration=seconds,
                          audio_sample_rate=sound.audio_sample_rate if sound else 0,
                          audio_channels=sound.audio_channels if sound else 0, crf=crf, preset=preset)
        self._errors = tempfile.TemporaryFile(dir=temp_dir)
        try:
            self._proc: subprocess.Popen[bytes] | None = _popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._errors)
        except BaseException:
            self._errors.close()
            raise

    def write(self, frame: Frame) -> None:
        """Send one height x width x 3 uint8 BGR frame (copied only if it is not contiguous)."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype}, writer expects "
                             f"({self.height}, {self.width}, 3) uint8")
        if self._proc is None:
            raise ValueError("VideoWriter is closed")
        self.frames_written += 1
        if self._stopped:
            return
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except BrokenPipeError:
            self._stopped = True  # close() tells success (audio end reached) from failure

    def close(self) -> None:
        """Finish encoding and move the file into place; LipSyncError with ffmpeg's words if it failed."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            assert proc.stdin is not None
            proc.stdin.close()
        except BrokenPipeError:
            pass
        code = proc.wait()
        _stop(proc)
        reason = _file_tail(self._errors)
        self._errors.close()
        if code != 0 or self.frames_written == 0 or not self._partial.is_file():
            self._partial.unlink(missing_ok=True)
            detail = reason if self.frames_written else "no frames were written"
            raise LipSyncError(f"ffmpeg could not write {self.path} ({detail})")
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        """Stop ffmpeg and delete the partial file."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        _stop(proc)
        self._errors.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
