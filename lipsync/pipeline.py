"""Orchestrates one run: audio → faces → generator → blend → video, with progress and a private temp dir."""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple, TypeVar, Union

import numpy as np

from . import (audio, canvas, cpu, encoding, facecrop, geometry, loading, native, nvenc, passes, paths, runtime,
               synth, video, writeahead)
from .engine import DEFAULT_ENGINE, Engine, cpu_threads, detection_batch, generator_batch
from .errors import LipSyncError
from .job import Job, read_at, run_rate, source_frames
from .passes import Pair
from .options import LipSyncOptions
from .segments import SegmentSink
from .types import STAGE_AUDIO, STAGE_ENCODE, STAGE_ENHANCE, STAGE_LOAD, STAGE_SYNC, Frame, Progress

log = logging.getLogger(__name__)

OVERLAP_LOADING = True  # load the networks while the audio and a picture decode (False: one after the other)

PathLike = Union[str, Path]
T = TypeVar("T")
NO_FACE_NOTE = "{absent} of {total} frames had no face; they are passed through unchanged"
# the GPU's video encoder failed in a job (lipsync.nvenc: the process keeps x264 from then on)
NVENC_FAILED_NOTE = "the GPU's video encoder (NVENC) failed ({reason}): x264 encoded this video on the CPU"
NVENC_FAILED_SHOWN = ("the GPU's video encoder (NVENC) failed part-way ({reason}); runs from now on encode with x264 "
                      "on the CPU: run this again")


@dataclass(frozen=True)
class RunResult:
    """What a run produced, for the CLI's and the app's status line."""

    outfile: Path
    frames: int
    fps: float
    seconds: float
    device: str
    model: str
    paddle: str  # paddle version, for status lines and bug reports
    notes: Tuple[str, ...] = ()  # what the run changed about the input, for the user (e.g. a picture scaled down)
    frames_without_face: int = 0  # output frames the followed face was not in: passed through unchanged
    precision: str = "fp32"  # the generator's arithmetic: bf16/fp16 where the precision gate passed it, or forced


def run(
    face: PathLike,
    audio_path: PathLike,
    outfile: PathLike,
    options: Optional[LipSyncOptions] = None,
    progress: Optional[Progress] = None,
    engine: Optional[Engine] = None,
    segments: Optional[SegmentSink] = None,
) -> RunResult:
    """Make the face in `face` (picture or video) speak `audio_path`; write it to `outfile`: an H.264/AAC .mp4,
    .mov or .mkv, or a VP9/Opus .webm, as its name says (lipsync.containers).

    `segments`, when given, receives the output while it is encoded, as one-second MPEG-TS files of the same
    frames and audio (H.264 + AAC, in order; see lipsync.segments), all of them before `run` returns; they are
    cut from the output's own encode (H.264 only), which then has a keyframe every second."""
    options = options or LipSyncOptions()
    report = progress or _no_progress
    engine = engine or DEFAULT_ENGINE
    started = time.perf_counter()
    video.require_ffmpeg()
    face_p, audio_p, out_p = paths.check_paths(face, audio_path, outfile)
    created = paths.missing_folders(out_p.parent)
    try:
        with tempfile.TemporaryDirectory(prefix="lipsync-") as tmp:
            job, networks = _prepare_while_loading(face_p, audio_p, out_p, options, engine, report, segments)
            notes, absent = _render(job, options, networks, Path(tmp), report)
    except BaseException:
        paths.remove_empty(created)
        raise
    finally:
        native.release_freed_memory()
    seconds = time.perf_counter() - started
    return RunResult(out_p, job.frames, job.fps, seconds, _describe(networks.device), options.checkpoint,
                     runtime.paddle_version(), job.notes + networks.notes + notes, absent,
                     loading.generator_precision(networks.generator))  # fmt: skip


def _prepare_while_loading(face: Path, audio_path: Path, outfile: Path, options: LipSyncOptions, engine: Engine,
                           report: Progress, segments: Optional[SegmentSink]) -> Tuple[Job, loading.Networks]:  # fmt: skip
    """Probe the face input while the audio decodes (bad input is told before paddle loads, the face's
    first), then decode a picture while the networks load on a thread of their own: start-up is paid once,
    not twice."""
    report(STAGE_AUDIO, 0, 1)
    heard = _in_background(functools.partial(_hear, audio_path))
    info = video.probe(face)
    geometry.check_source(info)
    still = info.is_image or options.static
    load = _in_background(functools.partial(loading.load_networks, engine, options, still))
    job = _prepare(face, info, heard(), outfile, options, segments)
    report(STAGE_AUDIO, 1, 1)
    report(STAGE_LOAD, 0, 1)
    networks = load()
    report(STAGE_LOAD, 1, 1)
    return job, networks


def _in_background(call: Callable[[], T]) -> Callable[[], T]:
    """`call` started on a thread of its own (with OVERLAP_LOADING); the function returned waits for its result."""
    if not OVERLAP_LOADING:
        return call
    return loading.Background(call).result


def _render(job: Job, options: LipSyncOptions, networks: loading.Networks, tmp: Path,
            report: Progress) -> Tuple[Tuple[str, ...], int]:  # fmt: skip
    """Find the faces (pass 1: before pass 2, or alongside it for a video: lipsync.passes), then generate, blend,
    enhance and encode (pass 2); returns notes for the user and the number of frames without the face."""
    device, enhancer = networks.device, networks.enhancer
    cpu.use_opencv_threads(cpu_threads(options))
    if enhancer is not None and device.kind == "cpu":
        facecrop.announce_cpu_time(job.frames, enhancer.size, cpu_threads(options))
    report = _serialized(report)  # pass 1 may report from a thread of its own
    absent, notes = _lip_sync(job, options, networks, tmp, report)
    return notes + ((NO_FACE_NOTE.format(absent=absent, total=job.frames),) if absent else ()), absent


def _lip_sync(job: Job, options: LipSyncOptions, networks: loading.Networks, tmp: Path,
              report: Progress) -> Tuple[int, Tuple[str, ...]]:  # fmt: skip
    """The passes; run again if NVENC failed before any of the video was shown (the writer tells it at its first
    frames: little is lost), x264 encoding then. The frames without the face, and a note if it ran again."""
    try:
        return _passes(job, options, networks, tmp, report), ()
    except encoding.GpuEncoderFailed as failed:
        nvenc.give_up(failed.reason)  # before running again: _encoder asks lipsync.nvenc
        if failed.shown:
            raise LipSyncError(NVENC_FAILED_SHOWN.format(reason=failed.reason)) from failed
        log.warning("video encoder: %s failed (%s); the job runs again with x264", nvenc.CODEC, failed.reason)
        return _passes(job, options, networks, tmp, report), (NVENC_FAILED_NOTE.format(reason=failed.reason),)


def _passes(job: Job, options: LipSyncOptions, networks: loading.Networks, tmp: Path, report: Progress) -> int:
    """Pass 1 and pass 2 (lipsync.passes) into the job's encoder; the number of output frames without the face."""
    device = networks.device
    with passes.open_passes(job, options, networks.detect, detection_batch(options, device), tmp, report) as source:
        encoder = _encoder(job, device)  # NVENC's first test encode runs while pass 1 starts
        _synthesize(job, options, networks, generator_batch(options, device), source.pairs(), tmp, report, encoder)
        return source.found.absent_frames(job)


def _serialized(report: Progress) -> Progress:
    """`report`, called by one thread at a time."""
    lock = threading.Lock()

    def serialized(stage: str, done: int, total: int) -> None:
        with lock:
            report(stage, done, total)

    return serialized


def _encoder(job: Job, device: runtime.Device) -> encoding.Encoder:
    """How the job's frames are encoded: ffmpeg's threads, and on a GPU whether NVENC encodes them."""
    on_gpu = device.kind == "gpu"
    encoder = encoding.Encoder(threads=encoding.encoder_threads(*job.size, job.still, cpu_bound=not on_gpu),
                               gpu=nvenc.chosen(on_gpu, job.still, job.size))  # fmt: skip
    if on_gpu and not job.still:
        log.info("video encoder: %s", nvenc.CODEC if encoder.gpu else nvenc.why_not(job.size))
    return encoder


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def _describe(device: runtime.Device) -> str:
    return device.kind if device.reason == "requested" else f"{device.kind} ({device.reason})"


@dataclass(frozen=True)
class _Speech:
    """The audio file decoded (16 kHz mono), its mel spectrogram, and its streams as the encoder needs them."""

    path: Path
    wav: np.ndarray
    mel: np.ndarray
    info: video.MediaInfo


def _hear(audio_path: Path) -> _Speech:
    """Decode the audio to its mel while ffprobe reads its streams (two processes at once)."""
    streams = _in_background(functools.partial(video.probe, audio_path, require_video=False))
    wav = audio.load_audio(audio_path)
    return _Speech(audio_path, wav, audio.melspectrogram(wav), streams())


def _prepare(face: Path, info: video.MediaInfo, speech: _Speech, outfile: Path, options: LipSyncOptions,
             segments: Optional[SegmentSink] = None) -> Job:  # fmt: skip
    """The job's facts from the probed face input and the decoded speech, and a picture's one frame."""
    size = geometry.frame_size(info, options)
    still = info.is_image or options.static
    fps = run_rate(info, options)
    notes = _input_notes(info, options, fps)
    info = read_at(info, fps)
    frames = audio.frame_count(speech.mel.shape[1], fps)
    job = Job(face, speech.path, outfile, info, speech.mel, fps, frames, still, audio.duration(speech.wav), size,
               notes, segments, sound=speech.info,
               pixel_aspect=geometry.pixel_aspect(info, options))
    if still:  # the frame, from the pixels the probe decoded; the job keeps it, not the probe's copy
        job = replace(job, still_frame=_first_frame(job, options), info=replace(info, picture=None))
    return job


def _first_frame(job: Job, options: LipSyncOptions) -> Frame:
    """A still's one frame, decoded once (while the networks load)."""
    with contextlib.closing(source_frames(job, options)) as frames:
        frame = next(frames, None)
    if frame is None:
        raise LipSyncError(f"no frame could be read from {job.face.name}")
    return frame


def _input_notes(info: video.MediaInfo, options: LipSyncOptions, fps: float) -> Tuple[str, ...]:
    """Say so when frames will be scaled down to what video players decode, deinterlaced, tone-mapped from HDR,
    or dropped (a video faster than the run's rate `fps`)."""
    notes = []
    if not info.is_image and fps < info.fps:
        notes.append(f"{info.path.name} is {info.fps:.4g} frames/s: it runs at {fps:.4g}, one frame in "
                     f"{round(info.fps / fps)} (the mouth needs no more, and few screens show more)")
    width, height = video.transformed_size(info.width, info.height, options.resize_factor, options.rotate,
                                           options.crop)  # fmt: skip
    if video.fitted_size(width, height) != (width, height):
        notes.append(f"{info.path.name} is {info.width}×{info.height} px: frames are scaled down to "
                     f"{video.MAX_FRAME_PIXELS / 1e6:.1f} megapixels at most, the largest size video players decode")
    if info.interlaced:
        notes.append(f"{info.path.name} is interlaced video: its frames are deinterlaced (bwdif), as the result is "
                     "progressive")
    if video.tone_maps(info):
        notes.append(f"{info.path.name} is {info.hdr} HDR video: its frames are tone-mapped to SDR (BT.709), "
                     "as the H.264 result is shown")
    elif info.hdr:
        notes.append(f"{info.path.name} is {info.hdr} HDR video, and this ffmpeg lacks the zscale filter that "
                     "tone-maps it: the result's colours will look dull (Debian's and Ubuntu's ffmpeg have it)")
    return tuple(notes)


def _synthesize(job: Job, options: LipSyncOptions, networks: loading.Networks, batch: int, frames: Iterator[Pair],
                tmp: Path, report: Progress, encoder: encoding.Encoder) -> None:  # fmt: skip
    """Run the generator batch by batch over pass 2's (frame, box) pairs, paste the mouths back, enhance them (GPEN,
    when on), and stream frames into the `encoder`; frames without the face go through as they are."""
    with contextlib.closing(frames) as pairs:  # its reader stops however this ends
        _encode(job, options, networks, batch, pairs, tmp, report, encoder)


def _encode(job: Job, options: LipSyncOptions, networks: loading.Networks, batch: int, pairs: Iterator[Pair],
            tmp: Path, report: Progress, encoder: encoding.Encoder) -> None:  # fmt: skip
    first = next(pairs)
    generate = synth.mouth_generator(networks.generator, batch, first, networks.single_job)
    enhancer = networks.enhancer
    enhance = synth.face_enhancer(enhancer)
    height, width = first[0].shape[:2]
    # a still without face enhancement (which redraws more than the box): the encoder gets its picture once
    board = canvas.for_still(*first, options.blend, tmp) if job.still and enhancer is None else None
    paste = canvas.paster(board, options.blend, copy=job.still)
    drawn = done = 0  # frames sent to the generator, frames handed to the encoder

    def finish(chunk: synth.Chunk) -> None:  # paste, enhance and hand to the encoder; the next chunks draw meanwhile
        nonlocal done
        synced = synth.paste_chunk(chunk, paste)
        done += len(synced)
        report(STAGE_SYNC, done, job.frames)
        if enhance is not None:
            if chunk.live:
                enhance([synced[i] for i in chunk.live], [chunk.boxes[i] for i in chunk.live])
            report(STAGE_ENHANCE, done, job.frames)
        for frame in synced:
            writer.write(frame)

    in_flight = synth.chunks_in_flight(0 if job.still else first[0].nbytes, batch)
    with encoding.VideoWriter(job.outfile, size=(width, height), fps=job.fps, audio=job.audio, temp_dir=tmp,
                              audio_seconds=job.seconds, segments=job.segments, audio_info=job.sound,
                              still=job.still, canvas=board, threads=encoder.threads,
                              pixel_aspect=job.pixel_aspect, gpu_encoder=encoder.gpu) as ffmpeg_writer, \
            writeahead.WriteAhead(ffmpeg_writer.write, unblock=ffmpeg_writer.abort) as writer, \
            synth.Ahead(in_flight) as ahead:  # fmt: skip
        for chunk in synth.batches(synth.chain_first(first, pairs), batch):
            frames, boxes = [p[0] for p in chunk], [p[1] for p in chunk]
            mels = audio.mel_batch(job.mel, drawn, drawn + len(chunk), job.fps)[:, None]
            drawn += len(chunk)
            for ready in ahead.push(functools.partial(synth.draw_chunk, frames, boxes, mels, generate)):
                finish(ready)
        for ready in ahead.drain():
            finish(ready)
        report(STAGE_ENCODE, 0, 1)
    report(STAGE_ENCODE, 1, 1)
