"""Orchestrates one run: audio → faces → generator → blend → video, with progress and a private temp dir."""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple, TypeVar, Union

import numpy as np

from . import (audio, canvas, cpu, encoding, facecrop, faces, geometry, loading, native, paths, picker, runtime,
               shots, synth, video, writeahead)
from .engine import DEFAULT_ENGINE, Enhancer, Engine, StillGenerator, cpu_threads, detection_batch, generator_batch
from .errors import LipSyncError
from .options import LipSyncOptions
from .segments import SegmentSink
from .types import (STAGE_AUDIO, STAGE_ENCODE, STAGE_ENHANCE, STAGE_FACES, STAGE_LOAD, STAGE_SYNC, Box, Frame,
                    Progress)

log = logging.getLogger(__name__)

FACES_REPORT_EVERY = 25  # frames between progress reports while reading and detecting
OVERLAP_LOADING = True  # load the networks while the audio and a picture decode (False: one after the other)
LOOP_MARGIN_FRAMES = 2  # cache frames for ping-pong when the video is within this of the audio's length

PathLike = Union[str, Path]
T = TypeVar("T")
Pair = Tuple[Frame, Optional[Box]]  # an output frame and its face box (None: the face is not in it)
NO_FACE_NOTE = "{absent} of {total} frames had no face; they are passed through unchanged"


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


@dataclass(frozen=True)
class _Job:
    """The facts one run works from, gathered before any frame is touched."""

    face: Path
    audio: Path
    outfile: Path
    info: video.MediaInfo
    mel: np.ndarray
    fps: float
    frames: int  # output frames = mel windows
    still: bool  # one source frame for every output frame
    seconds: float  # of decoded speech: the output's length
    size: Tuple[int, int]  # width, height of the frames worked on (after resize, rotation, crop and fit)
    notes: Tuple[str, ...]
    segments: Optional[SegmentSink] = None  # where finished pieces of the output go while it is encoded
    still_frame: Optional[Frame] = None  # a still's one frame, decoded while the networks load
    sound: Optional[video.MediaInfo] = None  # the audio file's streams, for the encoder (probed while they load)


def run(
    face: PathLike,
    audio_path: PathLike,
    outfile: PathLike,
    options: Optional[LipSyncOptions] = None,
    progress: Optional[Progress] = None,
    engine: Optional[Engine] = None,
    segments: Optional[SegmentSink] = None,
) -> RunResult:
    """Make the face in `face` (picture or video) speak `audio_path`; write an H.264/AAC mp4 to `outfile`.

    `segments`, when given, receives the output while it is encoded, as one-second MPEG-TS files of the same
    frames and audio (H.264 + AAC, in order; see lipsync.segments), all of them before `run` returns; they are
    cut from the mp4's own encode, which then has a keyframe every second."""
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
                           report: Progress, segments: Optional[SegmentSink]) -> Tuple[_Job, loading.Networks]:  # fmt: skip
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


def _render(job: _Job, options: LipSyncOptions, networks: loading.Networks, tmp: Path,
            report: Progress) -> Tuple[Tuple[str, ...], int]:  # fmt: skip
    """Find the faces, then generate, blend, enhance and encode; returns notes for the user and the number of
    frames without the face."""
    device, enhancer = networks.device, networks.enhancer
    cpu.use_opencv_threads(cpu_threads(options))
    if enhancer is not None and device.kind == "cpu":
        facecrop.announce_cpu_time(job.frames, enhancer.size, cpu_threads(options))
    found = _locate_faces(job, options, networks.detect, detection_batch(options, device), tmp, report)
    absent = found.absent_frames(job)
    try:
        threads = encoding.encoder_threads(*job.size, job.still, cpu_bound=device.kind == "cpu")
        _synthesize(job, options, networks.generator, generator_batch(options, device), found, tmp, report,
                    enhancer, threads)
    finally:
        if found.cache is not None:
            found.cache.close()
    return ((NO_FACE_NOTE.format(absent=absent, total=job.frames),) if absent else ()), absent


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
             segments: Optional[SegmentSink] = None) -> _Job:  # fmt: skip
    """The job's facts from the probed face input and the decoded speech, and a picture's one frame."""
    size = geometry.frame_size(info, options)
    still = info.is_image or options.static
    fps = options.fps if info.is_image else info.fps
    frames = audio.frame_count(speech.mel.shape[1], fps)
    job = _Job(face, speech.path, outfile, info, speech.mel, fps, frames, still, audio.duration(speech.wav), size,
               _size_notes(info, options), segments, sound=speech.info)
    if still:
        job = replace(job, still_frame=_first_frame(job, options))
    return job


def _first_frame(job: _Job, options: LipSyncOptions) -> Frame:
    """A still's one frame, decoded once (while the networks load)."""
    with contextlib.closing(_source_frames(job, options)) as frames:
        frame = next(frames, None)
    if frame is None:
        raise LipSyncError(f"no frame could be read from {job.face.name}")
    return frame


def _size_notes(info: video.MediaInfo, options: LipSyncOptions) -> Tuple[str, ...]:
    """Say so when frames will be scaled down to what video players decode."""
    width, height = video.transformed_size(info.width, info.height, options.resize_factor, options.rotate,
                                           options.crop)  # fmt: skip
    if video.fitted_size(width, height) == (width, height):
        return ()
    return (f"{info.path.name} is {info.width}×{info.height} px: frames are scaled down to "
            f"{video.MAX_FRAME_PIXELS / 1e6:.1f} megapixels at most, the largest size video players decode",)


def _source_frames(job: _Job, options: LipSyncOptions) -> Iterator[Frame]:
    """The face input's frames after the seed's resize/rotate/crop edits (one for a still)."""
    if job.still_frame is not None:
        return _once(job.still_frame)
    return picker.source_frames(job.face, job.info, options, job.still)


def _once(frame: Frame) -> Iterator[Frame]:
    yield frame


@dataclass
class _Faces:
    """Face boxes per source frame, and the frames themselves when the output must loop over them."""

    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2; one row serves every frame of a still or a fixed --box
    cache: Optional[video.FrameCache] = None
    present: Optional[np.ndarray] = None  # per source frame, whether the face is in it (None: in every frame)

    def box(self, index: int) -> Optional[Box]:
        """The face box of a source frame; None when the face is not in it."""
        index = min(index, len(self.boxes) - 1)
        if self.present is not None and not self.present[index]:
            return None
        x1, y1, x2, y2 = self.boxes[index]
        return int(x1), int(y1), int(x2), int(y2)

    def absent_frames(self, job: "_Job") -> int:
        """How many output frames show no face (passed through unchanged)."""
        if self.present is None or job.still:
            return 0
        last = len(self.present) - 1
        sources = [video.pingpong_index(i, len(self.cache)) if self.cache is not None else min(i, last)
                   for i in range(job.frames)]  # fmt: skip
        return int(np.count_nonzero(~self.present[sources]))


def _needs_loop(job: _Job) -> bool:
    """Whether the audio may outlast the video, so frames must be replayed forward and back."""
    known = job.info.frame_count
    return not job.still and (known is None or known < job.frames + LOOP_MARGIN_FRAMES)


def _locate_faces(
    job: _Job, options: LipSyncOptions, detect: Optional[faces.DetectFn], batch: int, tmp: Path, report: Progress
) -> _Faces:
    """Pass 1: read the frames once, find a face box in each, keep the frames on disk if they must loop."""
    cache = video.FrameCache(tmp) if _needs_loop(job) else None
    fixed = None
    if detect is None:  # a fixed --box, checked against the frame size when the job was prepared
        fixed = np.array([faces.fixed_box(options.box, job.size[::-1])])  # type: ignore[arg-type]
        if cache is None:
            return _Faces(fixed)
    try:
        tracked = _pass_frames(job, options, detect, batch, cache, report)
    except BaseException:
        if cache is not None:
            cache.close()
        raise
    if tracked is None:
        return _Faces(fixed, cache)  # type: ignore[arg-type]
    boxes, present = tracked
    return _Faces(boxes, cache, None if present.all() else present)


def _pass_frames(job: _Job, options: LipSyncOptions, detect: Optional[faces.DetectFn], batch: int,
                 cache: Optional[video.FrameCache], report: Progress) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Read the frames, caching and/or tracking the face in them; the boxes found and whether the face is in
    each frame (None without a detector)."""
    tracker = None
    if detect is not None:
        every = 1 if job.still else options.detect_every
        tracker = faces.FaceTracker(detect, every, options.detect_max_side, batch, retry_larger=job.still,
                                    face_index=options.face_index)  # fmt: skip
    total = 1 if job.still else min(job.frames, job.info.frame_count or job.frames)
    shape: Tuple[int, ...] = ()
    with contextlib.closing(_source_frames(job, options)) as frames:  # ffmpeg stops here, not when collected
        for index, frame in enumerate(_limit(frames, job.frames)):
            shape = frame.shape
            if cache is not None:
                cache.append(frame)
            if tracker is not None:
                tracker.push(frame)
            if index % FACES_REPORT_EVERY == 0:
                report(STAGE_FACES, index, total)
    report(STAGE_FACES, total, total)
    return None if tracker is None else _finish_boxes(tracker, shape, job, options)


def _limit(frames: Iterator[Frame], count: int) -> Iterator[Frame]:
    for index, frame in enumerate(frames):
        if index >= count:
            return
        yield frame


def _finish_boxes(tracker: faces.FaceTracker, shape: Tuple[int, ...], job: _Job,
                  options: LipSyncOptions) -> Tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Fill the frames between detections, add the pads, smooth over time within each stretch of frames with
    the face (boxes only: frames are gone); also whether the face is in each frame."""
    found = tracker.finish()
    if not found:
        raise LipSyncError(f"no frame could be read from {job.face.name}")
    boxes = faces.fill_gaps(found, job.face.name, _no_face_advice(options, shape, job.still))
    present = ~np.array(shots.bridge_misses(tracker.absent(), tracker.cuts), dtype=bool)
    padded = faces.apply_pads(boxes, options.pads, shape)
    geometry.check_padded(boxes, padded, options.pads, job.face.name)
    boxes = padded
    if options.smooth and not job.still:
        boxes = shots.smooth_runs(boxes, present, tracker.cuts)
    return boxes, present


def _no_face_advice(options: LipSyncOptions, shape: Tuple[int, ...], still: bool) -> str:
    """What to try when no face was found, given what was tried (a still was also searched larger)."""
    other = "--face_detector sfd (S3FD)" if options.face_detector == "haar" else "--face_detector haar"
    advice = f"try a clearer, front-facing picture, {other}, or give the face position with --box y1 y2 x1 x2"
    searched = options.detect_max_side * (faces.RETRY_SIDE_FACTOR if still else 1)
    if faces.detection_scale(shape, searched) < 1.0:
        advice += f"; a small face may need --detect_max_side 0 (frames were searched at {options.detect_max_side} px)"
    return advice


def _output_frames(job: _Job, options: LipSyncOptions, found: _Faces) -> Iterator[Pair]:
    """Pass 2: (frame, box) for each output frame; video loops forward and back when the audio is longer."""
    if found.cache is not None:
        for i in range(job.frames):
            src = video.pingpong_index(i, len(found.cache))
            yield found.cache[src], found.box(src)
        return
    frame: Optional[Frame] = None
    with contextlib.closing(_source_frames(job, options)) as stream:
        for i in range(job.frames):
            frame = _next_frame(stream, frame, job)
            yield frame, found.box(0 if job.still else i)


def _next_frame(stream: Iterator[Frame], last: Optional[Frame], job: _Job) -> Frame:
    """The stream's next frame. A video shorter than its probed length repeats its last frame, as a copy: the
    one sent may still wait for the encoder while this one is pasted on (a still's frame is only copied from)."""
    frame = next(stream, None)
    if frame is not None:
        return frame
    if last is None:
        raise LipSyncError(f"no frame could be read from {job.face.name}")
    return last if job.still else last.copy()


def _synthesize(job: _Job, options: LipSyncOptions, generator: Union[runtime.Predictor, StillGenerator], batch: int,
                found: _Faces, tmp: Path, report: Progress, enhancer: Optional[Enhancer],
                threads: int) -> None:  # fmt: skip
    """Run the generator batch by batch, paste the mouths back, enhance them (GPEN, when on), and stream
    frames into the encoder (ffmpeg with `threads`, 0 for its own choice); frames without the face go through as
    they are."""
    with contextlib.closing(_output_frames(job, options, found)) as pairs:  # its reader stops however this ends
        _encode(job, options, generator, batch, pairs, tmp, report, enhancer, threads)


def _encode(job: _Job, options: LipSyncOptions, generator: Union[runtime.Predictor, StillGenerator], batch: int,
            pairs: Iterator[Pair], tmp: Path, report: Progress, enhancer: Optional[Enhancer],
            threads: int) -> None:  # fmt: skip
    first = next(pairs)
    generate = synth.mouth_generator(generator, batch, first)
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
                              still=job.still, canvas=board, threads=threads) as encoder, \
            writeahead.WriteAhead(encoder.write, unblock=encoder.abort) as writer, \
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
