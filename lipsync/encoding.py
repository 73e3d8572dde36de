"""Frames out: encode BGR frames (or a still's changing part of them) plus the speech through one ffmpeg, to the
container the output's name asks for (lipsync.containers): H.264 and AAC, or VP9 and Opus in a .webm."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from lipsync import containers, ffmpeg, nvenc, segments
from lipsync.canvas import SCALE_FLAGS, Canvas
from lipsync.containers import Container
from lipsync.errors import LipSyncError
from lipsync.ffmpeg import file_arg, rate_arg
from lipsync.mediainfo import MediaInfo, probe
from lipsync.segments import SegmentSink, SegmentStream
from lipsync.types import Frame

__all__ = ["Encoder", "GpuEncoderFailed", "VideoWriter", "encoder_threads", "write_args"]

VIDEO_CODEC = "libx264"
VIDEO_CRF = 18  # near-transparent quality; the regenerated mouth must not smear
VIDEO_PRESET = "veryfast"  # ~3x faster than "medium" at a few % more bits; encoding stays cheap next to the model
# A still's frames change only where the mouth is pasted, where x264's second sub-pixel refinement bought little
# (512² picture, 375 frames: the same size to 0.02 %, the mouth's PSNR to 0.02 dB; a real mouth smoothly warped:
# 1.1 % more bits, 0.02 dB) for 15 % of the encoder's CPU, taken from the cores the generator needs; on a moving video
# it buys 21 % of the size: there it stays. subme=0 (whole pixels) cost the smooth mouth 2.6 % more bits
STILL_X264_PARAMS = "subme=1"
# A still's ffmpeg on CPU runs in one thread (filters and x264): its frames differ only in a mouth-sized part, and
# ffmpeg's own threads (a filter slice and an x264 frame thread per core, x264's lookahead) only preempt the generator
# on its cores. 375 frames on one Zen 4 core: 512² at 700 frames/s with 17 % less CPU and 600 context switches
# against 7700; 1280×720 at 275 frames/s (4x the generator's pace, 13 % less CPU); 1920×1080 at 132, too close to
# it: larger pictures keep ffmpeg's threads
SINGLE_THREAD_MAX_PIXELS = 1280 * 720
VIDEO_PIX_FMT = "yuv420p"  # what every player and browser decodes
COLOUR_MATRIX = "bt709"  # convert and tag explicitly so players don't guess (and shift colours)
AUDIO_CODEC = "aac"
AUDIO_BITRATE = "192k"
# ffmpeg's "fast" AAC coder: at this bitrate it is the better-sounding one as well as the cheaper (its author made it
# the default in 2018 for that reason: FFmpeg commit fcb681ac); twoloop, the default here, took 0.26 CPU s for
# 13.7 s of speech against 0.12, on the cores the generator needs
AUDIO_CODER = "fast"
# VP9 (a .webm) at constant quality (-b:v 0) and libvpx's real-time speed: on a 720p pan of a photo CRF 24 matched
# x264's CRF 18 above (48.4 against 48.1 dB) in 0.8 times its CPU and 1.7 times its size; libvpx's "good" deadline
# took 7 times the CPU. Row threading lets it use more than one core per tile column
VP9_CODEC = "libvpx-vp9"
VP9_CRF = 24
VP9_SPEED = ("-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1")
OPUS_CODEC = "libopus"
OPUS_BITRATE = "128k"  # transparent for speech and music alike; Opus resamples to 48 kHz itself
SAR_MAX = 65535  # H.264 stores a pixel's aspect as two 16-bit numbers: setsar keeps the ratio exact up to them
MAX_AUDIO_RATE = 48000  # Hz; higher source rates are resampled down, lower ones kept as they are
MAX_AUDIO_CHANNELS = 2  # surround sound is mixed down to stereo, which every browser plays


@dataclass(frozen=True)
class Encoder:
    """How a job's ffmpeg encodes: its threads (encoder_threads: 0 = ffmpeg's choice) and whether H.264 is the GPU's
    (lipsync.nvenc.chosen)."""

    threads: int = 0
    gpu: bool = False


class GpuEncoderFailed(LipSyncError):
    """A writer's ffmpeg failed while NVENC encoded its H.264 (`said`: the last of ffmpeg's words, `reason`: its
    first line, the cause); `shown`: some of the video was handed over as segments already (the page played it)."""

    def __init__(self, path: Path, said: str, reason: str, shown: bool) -> None:
        super().__init__(f"ffmpeg could not write {path} with the GPU's encoder {nvenc.CODEC} ({said})")
        self.reason, self.shown = reason, shown


# ---------------------------------------------------------------- argument builders (pure)


def _to_yuv(flags: str) -> str:
    """The filters converting BGR to the output's yuv (swscale's `flags` if any: a still's are exact per part)."""
    scale = f"scale=out_color_matrix={COLOUR_MATRIX}:out_range=tv" + (f":flags={flags}" if flags else "")
    return f"{scale},format={VIDEO_PIX_FMT}"


def _hold(hold_last_frame: bool) -> list[str]:
    return ["tpad=stop=-1:stop_mode=clone"] if hold_last_frame else []  # -t cuts it at the audio's end


def _shown_as(pixel_aspect: Fraction) -> list[str]:
    """Tag the frames with their pixels' aspect (none for square pixels), so that players stretch them as the
    input was shown: raw frames on a pipe have no aspect of their own."""
    if pixel_aspect == 1:
        return []
    return [f"setsar=sar={pixel_aspect.numerator}/{pixel_aspect.denominator}:max={SAR_MAX}"]


def _video_filters(width: int, height: int, hold_last_frame: bool, flags: str = "",
                   pixel_aspect: Fraction = Fraction(1)) -> str:  # fmt: skip
    """Filter chain for the writer: pad odd sizes by one smeared pixel, optionally hold the last frame, to yuv,
    with the pixels' aspect."""
    filters = []
    if width % 2 or height % 2:
        filters.append(f"pad={width + width % 2}:{height + height % 2}")
        filters.append(f"fillborders=right={width % 2}:bottom={height % 2}:mode=smear")
    return ",".join([*filters, *_hold(hold_last_frame), _to_yuv(flags), *_shown_as(pixel_aspect)])


def _canvas_graph(canvas: Canvas, fps: float, hold_last_frame: bool, pixel_aspect: Fraction = Fraction(1)) -> str:
    """Filter graph for a still: its picture (input 1) converted once and repeated at the frame rate, each
    frame's changed part (input 0) converted and laid over it; ends with the parts (then held, if asked)."""
    region, convert = canvas.region, _to_yuv(SCALE_FLAGS)
    over = [f"overlay=x={region.x}:y={region.y}:format=yuv420:shortest=1", *_hold(hold_last_frame),
            *_shown_as(pixel_aspect)]
    return (f"[1:v]{convert},loop=loop=-1:size=1,setpts=round(N/({rate_arg(fps)})/TB)[canvas];[0:v]{convert}[part];"
            f"[canvas][part]{','.join(over)}[video]")


def encoder_threads(width: int, height: int, still: bool, cpu_bound: bool) -> int:
    """ffmpeg threads for the writer: 1 for a still of at most SINGLE_THREAD_MAX_PIXELS whose frames the CPU
    draws (the generator needs its cores), else 0: ffmpeg's choice, which keeps pace with a GPU."""
    return 1 if still and cpu_bound and width * height <= SINGLE_THREAD_MAX_PIXELS else 0


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
    segments_folder: str | Path | None = None,
    still: bool = False,
    canvas: Canvas | None = None,
    threads: int = 0,
    pixel_aspect: Fraction = Fraction(1),
    container: Container | None = None,
    gpu_encoder: bool = False,
) -> list[str]:
    """ffmpeg command encoding raw BGR frames from stdin, plus the first audio stream of `audio`, to `container`
    (by default the one `output`'s suffix names) and, given `segments_folder`, from the same encode to one-second
    segments there (H.264 only: see lipsync.segments).

    With a known audio duration the video holds its last frame and the output ends exactly at the
    audio's end (`-t`), which `-shortest` does not guarantee with piped video. A `still`'s frames are
    converted with SCALE_FLAGS and encoded with STILL_X264_PARAMS; given its `canvas`, stdin carries only the
    region of each frame that changes. `threads` > 0 caps ffmpeg's filter and encoder threads (encoder_threads).
    The output is tagged with `pixel_aspect` (a DVD's 64/45), the width over the height of a pixel as shown.
    `crf` and `preset` are x264's; VP9 has its own (VP9_CRF, VP9_SPEED). With `gpu_encoder`, H.264 is NVENC's
    (lipsync.nvenc says when it can be).
    """
    container = container or containers.container_for(output)
    timed = audio is not None and audio_duration > 0
    still = still or canvas is not None  # a canvas is only ever a still's
    head = [*ffmpeg.head(), "-y", *_thread_args(threads)]
    if canvas is None:
        args = [*head, *_raw_input(width, height, fps, "pipe:0")]
    else:  # the picture at the frames' rate, so that its time base is theirs
        region = canvas.region
        args = [*head, *_raw_input(region.width, region.height, fps, "pipe:0"),
                *_raw_input(width, height, fps, file_arg(canvas.picture))]  # fmt: skip
    if audio is not None:
        args += ["-i", file_arg(audio)]
    seconds = audio_duration if timed else 0.0
    if canvas is not None:
        graph = _canvas_graph(canvas, fps, hold_last_frame=seconds > 0, pixel_aspect=pixel_aspect)
        video = ["-filter_complex", graph, "-map", "[video]"]
    else:
        chain = _video_filters(width, height, seconds > 0, SCALE_FLAGS if still else "", pixel_aspect)
        video = ["-vf", chain, "-map", "0:v:0"]
    maps = [*video, "-map", f"{2 if canvas is not None else 1}:a:0"] if audio is not None else video
    keyframes_forced = segments_folder is not None
    encode = [*_video_codec(container, crf, preset, still, gpu_encoder, keyframes_forced), *_colour_tags()]
    if audio is not None:
        encode += _audio_codec(container, audio_sample_rate, audio_channels)
    if seconds > 0:
        encode += ["-t", f"{seconds:.6f}"]
    if threads > 0:
        encode = ["-threads", str(threads), *encode]  # the encoder's, as an output option before -c:v
    if segments_folder is not None:
        if container.codecs != containers.H264_AAC:
            raise ValueError(f"segments are cut from H.264 only, not from a {container.name} file's "
                             f"{'+'.join(container.codecs)}")
        return [*args, *maps, *encode, *segments.tee_args(output, container.muxer, segments_folder)]
    muxer = [arg for name, value in container.muxer for arg in (f"-{name}", value)]
    return [*args, *maps, *encode, *muxer, file_arg(output)]


def _thread_args(threads: int) -> list[str]:
    """Global options capping the filter graph's threads (either kind of graph) when `threads` > 0."""
    return ["-filter_threads", str(threads), "-filter_complex_threads", str(threads)] if threads > 0 else []


def _raw_input(width: int, height: int, fps: float, source: str) -> list[str]:
    """An ffmpeg input of raw BGR frames of this size at this rate."""
    return ["-f", "rawvideo", "-pix_fmt", "bgr24", "-video_size", f"{width}x{height}", "-framerate", rate_arg(fps),
            "-i", source]


def _video_codec(container: Container, crf: int, preset: str, still: bool, gpu_encoder: bool,
                 keyframes_forced: bool) -> list[str]:  # fmt: skip
    """The video encoder and its quality: x264 (a still's frames with STILL_X264_PARAMS) or NVENC (`gpu_encoder`),
    or VP9 in a .webm."""
    if container.codecs == containers.VP9_OPUS:
        return ["-c:v", VP9_CODEC, "-crf", str(VP9_CRF), "-b:v", "0", *VP9_SPEED, "-pix_fmt", VIDEO_PIX_FMT]
    if gpu_encoder:
        return nvenc.args(keyframes_forced)
    args = ["-c:v", VIDEO_CODEC, "-preset", preset, "-crf", str(crf), "-pix_fmt", VIDEO_PIX_FMT]
    return [*args, "-x264-params", STILL_X264_PARAMS] if still else args


def _colour_tags() -> list[str]:
    """The colours' matrix, primaries, transfer and range, said in the stream so that players do not guess."""
    return ["-colorspace", COLOUR_MATRIX, "-color_primaries", COLOUR_MATRIX, "-color_trc", COLOUR_MATRIX,
            "-color_range", "tv"]


def _audio_codec(container: Container, sample_rate: int, channels: int) -> list[str]:
    """The sound from its file's start (a late start kept as silence): AAC, or Opus in a .webm; at most
    MAX_AUDIO_RATE and MAX_AUDIO_CHANNELS."""
    if container.codecs == containers.VP9_OPUS:
        codec = ["-c:a", OPUS_CODEC, "-b:a", OPUS_BITRATE]
    else:
        codec = ["-c:a", AUDIO_CODEC, "-aac_coder", AUDIO_CODER, "-b:a", AUDIO_BITRATE]
    args = ["-af", ffmpeg.AUDIO_FROM_FILE_START, *codec]
    if sample_rate > MAX_AUDIO_RATE:
        args += ["-ar", str(MAX_AUDIO_RATE)]
    if channels > MAX_AUDIO_CHANNELS:
        args += ["-ac", str(MAX_AUDIO_CHANNELS)]
    return args


# ---------------------------------------------------------------- the writer


class VideoWriter:
    """Encode BGR frames plus an audio track to the container `path`'s suffix names, through one ffmpeg process.

    The file appears at `path` only when ffmpeg succeeded (it is written under a hidden temporary
    name next to it, then renamed), so a failed run leaves nothing behind, and `path` may even be one
    of the inputs. With audio, the output lasts exactly as long as the audio: the last frame is held
    if fewer frames came, extra frames are dropped. Use as a context manager; an exception aborts.
    Given `segments`, the same encode is also cut into one-second segments handed over as they are done
    (lipsync.segments: the mp4 then has a keyframe every second), the last ones by close(), before the mp4 is
    moved into place.
    A `still`'s frames are converted exactly per 2x2 block; given a still's `canvas`, write() takes only the
    region of each frame that changes, and ffmpeg lays it over the still's picture (lipsync.canvas).
    `threads` > 0 caps ffmpeg's threads (encoder_threads says when). `pixel_aspect` is the width over the height
    of a pixel as the frames are to be shown (not 1 for an anamorphic video's frames). With `gpu_encoder`, the H.264
    is NVENC's (lipsync.nvenc.chosen says when), and its failure is a GpuEncoderFailed.
    An ffmpeg that fails while frames still come (it stops reading them) is told by the write that finds it, so
    that a run stops at once instead of drawing its frames for nothing.
    """

    def __init__(self, path: str | Path, *, size: tuple[int, int], fps: float, audio: str | Path | None,
                 temp_dir: str | Path, audio_seconds: float | None = None, crf: int = VIDEO_CRF,
                 preset: str = VIDEO_PRESET, segments: SegmentSink | None = None,
                 audio_info: MediaInfo | None = None, still: bool = False, canvas: Canvas | None = None,
                 threads: int = 0, pixel_aspect: Fraction = Fraction(1), gpu_encoder: bool = False) -> None:
        self.path = Path(path)
        container = containers.container_for(self.path)  # its suffix: the partial file's is .part
        self.width, self.height = size
        part = (canvas.region.height, canvas.region.width) if canvas is not None else (self.height, self.width)
        self.frame_shape = (*part, 3)  # what write() takes: whole frames, or a canvas's changing region
        self.canvas = canvas
        self.frames_written = 0
        self._stopped = False  # ffmpeg stopped reading: it reached the audio's end, or failed
        self._gpu = gpu_encoder
        sound = audio_info  # `audio` probed already (a run does it while the networks load), else probed here
        if sound is None and audio is not None:
            sound = probe(audio, require_video=False)
        if sound is not None and not sound.has_audio:
            raise LipSyncError(f"{audio} has no audio track")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.part")
        seconds = audio_seconds if audio_seconds is not None else (sound.audio_duration if sound else 0.0)
        options = dict(width=self.width, height=self.height, fps=fps, audio=audio, audio_duration=seconds,
                       audio_sample_rate=sound.audio_sample_rate if sound else 0,
                       audio_channels=sound.audio_channels if sound else 0, crf=crf, preset=preset,
                       still=still, canvas=canvas, threads=threads, pixel_aspect=pixel_aspect,
                       gpu_encoder=gpu_encoder)
        self._stream = SegmentStream(segments, temp_dir) if segments is not None else None
        folder = self._stream.folder if self._stream is not None else None
        args = write_args(self._partial, segments_folder=folder, container=container,
                          **options)  # type: ignore[arg-type]
        try:
            self._process: ffmpeg.Process | None = ffmpeg.Process(args, stdin=True, temp_dir=temp_dir)
        except BaseException:
            if self._stream is not None:
                self._stream.stop()
            raise

    def write(self, frame: Frame) -> None:
        """Send one frame_shape uint8 BGR frame, or a canvas's region of one (copied only if not contiguous)."""
        if frame.shape != self.frame_shape or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype}, writer expects {self.frame_shape} uint8")
        if self._process is None:
            raise ValueError("VideoWriter is closed")
        self.frames_written += 1
        data = memoryview(np.ascontiguousarray(frame)).cast("B")
        if self._stopped:
            return
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(data)
        except BrokenPipeError:
            self._stopped = True  # ffmpeg has ended or is ending: it reached the audio's end (0), or failed
            if self._process.wait() != 0:
                raise self._failure(self._process, self._process.said(self._partial)) from None

    def close(self) -> None:
        """Finish encoding and move the file into place; LipSyncError with ffmpeg's words if it failed.
        However it ends, ffmpeg is reaped, its pipe and stderr file are closed, and no partial file is left:
        an interrupt (a batch worker being stopped) anywhere before the rename deletes it too."""
        process = self._process
        if process is None:
            return
        try:
            self._finish(process)
        except BaseException:
            self._discard(process)
            raise
        finally:
            self._process = None

    def _finish(self, process: ffmpeg.Process) -> None:
        code = process.finish()
        if code != 0 or self.frames_written == 0 or not self._partial.is_file():  # close() then stops it
            said = process.said(self._partial) if self.frames_written else "no frames were written"
            raise self._failure(process, said)
        process.stop()
        if self._stream is not None:
            self._stream.finish()  # the last segments before the mp4
        try:
            os.replace(self._partial, self.path)
        except OSError as error:
            raise LipSyncError(f"could not write {self.path} ({error.strerror})") from error

    def _failure(self, process: ffmpeg.Process, said: str) -> LipSyncError:
        """The error for `process` failing, telling what it `said`."""
        if self._gpu:
            shown = self._stream is not None and self._stream.handed > 0
            return GpuEncoderFailed(self.path, said, process.cause(), shown)
        return LipSyncError(f"ffmpeg could not write {self.path} ({said})")

    def abort(self) -> None:
        """Stop ffmpeg and delete the partial file."""
        if self._process is None:
            return
        process, self._process = self._process, None
        self._discard(process)

    def _discard(self, process: ffmpeg.Process) -> None:
        """Kill and reap ffmpeg, stop handing over segments, then delete what it wrote (once it is dead it can
        write no more)."""
        try:
            process.stop()
        finally:
            if self._stream is not None:
                self._stream.stop()
            self._partial.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
