"""Orchestrates one run: audio → faces → generator → blend → video, with progress and a private temp dir."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

from . import audio, blend, cpu, facecrop, faces, geometry, native, paths, runtime, video
from .engine import (DEFAULT_ENGINE, FACE_SIZE, Enhancer, Engine, StillGenerator, cpu_threads, detection_batch,
                     generator_batch, run_detector)
from .errors import LipSyncError
from .options import LipSyncOptions
from .segments import SegmentSink
from .types import (STAGE_AUDIO, STAGE_ENCODE, STAGE_ENHANCE, STAGE_FACES, STAGE_LOAD, STAGE_SYNC, Frame,
                    Progress)

log = logging.getLogger(__name__)

FACES_REPORT_EVERY = 25  # frames between progress reports while reading and detecting
LOOP_MARGIN_FRAMES = 2  # cache frames for ping-pong when the video is within this of the audio's length

PathLike = Union[str, Path]


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
    frames and audio (H.264 + AAC, in order; see lipsync.segments), all of them before `run` returns; the mp4
    is the same as without."""
    options = options or LipSyncOptions()
    report = progress or _no_progress
    engine = engine or DEFAULT_ENGINE
    started = time.perf_counter()
    video.require_ffmpeg()
    face_p, audio_p, out_p = paths.check_paths(face, audio_path, outfile)
    created = paths.missing_folders(out_p.parent)
    try:
        with tempfile.TemporaryDirectory(prefix="lipsync-") as tmp:
            job = _prepare(face_p, audio_p, out_p, options, report, segments)  # bad input: told before paddle loads
            device = runtime.choose_device(options.device)
            notes = _render(job, options, engine, device, Path(tmp), report)
    except BaseException:
        paths.remove_empty(created)
        raise
    finally:
        native.release_freed_memory()
    seconds = time.perf_counter() - started
    return RunResult(out_p, job.frames, job.fps, seconds, _describe(device), options.checkpoint,
                     runtime.paddle_version(), job.notes + notes)  # fmt: skip


def _render(job: _Job, options: LipSyncOptions, engine: Engine, device: runtime.Device, tmp: Path,
            report: Progress) -> Tuple[str, ...]:
    """Load the networks, find the faces, then generate, blend and encode; returns notes for the user."""
    report(STAGE_LOAD, 0, 1)
    cpu.use_opencv_threads(cpu_threads(options))
    generator = engine.still_generator(options, device) if job.still else engine.generator(options, device)
    detect, notes = run_detector(engine, options, device)
    enhancer = engine.enhancer(options, device) if options.face_enhancement else None
    report(STAGE_LOAD, 1, 1)
    if enhancer is not None and device.kind == "cpu":
        facecrop.announce_cpu_time(job.frames, enhancer.size, cpu_threads(options))
    found = _locate_faces(job, options, detect, detection_batch(options, device), tmp, report)
    try:
        _synthesize(job, options, generator, generator_batch(options, device), found, tmp, report, enhancer)
    finally:
        if found.cache is not None:
            found.cache.close()
    return notes


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def _describe(device: runtime.Device) -> str:
    return device.kind if device.reason == "requested" else f"{device.kind} ({device.reason})"


def _prepare(face: Path, audio_path: Path, outfile: Path, options: LipSyncOptions, report: Progress,
             segments: Optional[SegmentSink] = None) -> _Job:
    """Decode the audio to mel windows and probe the face input."""
    report(STAGE_AUDIO, 0, 1)
    info = video.probe(face)
    geometry.check_source(info)
    size = geometry.frame_size(info, options)
    wav = audio.load_audio(audio_path)
    mel = audio.melspectrogram(wav)
    still = info.is_image or options.static
    fps = options.fps if info.is_image else info.fps
    report(STAGE_AUDIO, 1, 1)
    frames = audio.frame_count(mel.shape[1], fps)
    return _Job(face, audio_path, outfile, info, mel, fps, frames, still, audio.duration(wav), size,
                _size_notes(info, options), segments)


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
    with contextlib.closing(video.read_frames(job.face, job.info)) as stream:
        for frame in stream:
            yield video.fit(video.transform(frame, options.resize_factor, options.rotate, options.crop))
            if job.still:
                return


@dataclass
class _Faces:
    """Face boxes per source frame, and the frames themselves when the output must loop over them."""

    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2; one row serves every frame of a still or a fixed --box
    cache: Optional[video.FrameCache] = None

    def box(self, index: int) -> Tuple[int, int, int, int]:
        x1, y1, x2, y2 = self.boxes[min(index, len(self.boxes) - 1)]
        return int(x1), int(y1), int(x2), int(y2)


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
        boxes = _pass_frames(job, options, detect, batch, cache, report)
    except BaseException:
        if cache is not None:
            cache.close()
        raise
    return _Faces(boxes if boxes is not None else fixed, cache)  # type: ignore[arg-type]


def _pass_frames(job: _Job, options: LipSyncOptions, detect: Optional[faces.DetectFn], batch: int,
                 cache: Optional[video.FrameCache], report: Progress) -> Optional[np.ndarray]:  # fmt: skip
    """Read the frames, caching and/or tracking the face in them; the boxes found (None without a detector)."""
    tracker = None
    if detect is not None:
        every = 1 if job.still else options.detect_every
        tracker = faces.FaceTracker(detect, every, options.detect_max_side, batch, retry_larger=job.still)
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
    return None if tracker is None else _finish_boxes(tracker.finish(), shape, job, options)


def _limit(frames: Iterator[Frame], count: int) -> Iterator[Frame]:
    for index, frame in enumerate(frames):
        if index >= count:
            return
        yield frame


def _finish_boxes(found: faces.Detections, shape: Tuple[int, ...], job: _Job, options: LipSyncOptions) -> np.ndarray:
    """Fill frames without a face, add the pads, smooth over time (boxes only: frames are gone)."""
    if not found:
        raise LipSyncError(f"no frame could be read from {job.face.name}")
    boxes = faces.fill_gaps(found, job.face.name, _no_face_advice(options, shape, job.still))
    padded = faces.apply_pads(boxes, options.pads, shape)
    geometry.check_padded(boxes, padded, options.pads, job.face.name)
    boxes = padded
    if options.smooth and not job.still:
        boxes = faces.smooth(boxes)
    return boxes


def _no_face_advice(options: LipSyncOptions, shape: Tuple[int, ...], still: bool) -> str:
    """What to try when no face was found, given what was tried (a still was also searched larger)."""
    other = "--face_detector sfd (S3FD)" if options.face_detector == "haar" else "--face_detector haar"
    advice = f"try a clearer, front-facing picture, {other}, or give the face position with --box y1 y2 x1 x2"
    searched = options.detect_max_side * (faces.RETRY_SIDE_FACTOR if still else 1)
    if faces.detection_scale(shape, searched) < 1.0:
        advice += f"; a small face may need --detect_max_side 0 (frames were searched at {options.detect_max_side} px)"
    return advice


def _output_frames(job: _Job, options: LipSyncOptions, found: _Faces) -> Iterator[Tuple[Frame, Tuple[int, ...]]]:
    """Pass 2: (frame, box) for each output frame; video loops forward and back when the audio is longer."""
    if found.cache is not None:
        for i in range(job.frames):
            src = video.pingpong_index(i, len(found.cache))
            yield found.cache[src], found.box(src)
        return
    frame = None
    with contextlib.closing(_source_frames(job, options)) as stream:
        for i in range(job.frames):
            frame = next(stream, frame)  # a video shorter than its probed length repeats its last frame
            if frame is None:
                raise LipSyncError(f"no frame could be read from {job.face.name}")
            yield frame, found.box(0 if job.still else i)


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _face_inputs(frames: List[Frame], boxes: List[Tuple[int, ...]]) -> np.ndarray:
    """Generator face input: [lower-half-masked crop, crop] on channels, /255, NCHW float32."""
    crops = np.stack([cv2.resize(f[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE)) for f, (x1, y1, x2, y2) in zip(frames, boxes)])
    masked = crops.copy()
    masked[:, FACE_SIZE // 2 :] = 0
    stacked = np.concatenate([masked, crops], axis=3).astype(np.float32) / 255.0
    return np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))


def _mouths(predicted: np.ndarray) -> np.ndarray:
    """Generator output [B,3,96,96] in [0,1] → B×96×96×3 uint8 BGR, truncated like the reference."""
    return (predicted.transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)


def _synthesize(
    job: _Job,
    options: LipSyncOptions,
    generator: Union[runtime.Predictor, StillGenerator],
    batch: int,
    found: _Faces,
    tmp: Path,
    report: Progress,
    enhancer: Optional[Enhancer] = None,
) -> None:
    """Run the generator batch by batch, paste the mouths back, enhance them (GPEN, when on), and stream
    frames into the encoder."""
    with contextlib.closing(_output_frames(job, options, found)) as pairs:  # its reader stops however this ends
        _encode(job, options, generator, batch, pairs, tmp, report, enhancer)


def _encode(job: _Job, options: LipSyncOptions, generator: Union[runtime.Predictor, StillGenerator], batch: int,
            pairs: Iterator[Tuple[Frame, Tuple[int, ...]]], tmp: Path, report: Progress,
            enhancer: Optional[Enhancer]) -> None:  # fmt: skip
    first = next(pairs)
    generate = _mouth_generator(generator, batch, first)
    enhance = _face_enhancer(enhancer)
    height, width = first[0].shape[:2]
    done = 0
    with video.VideoWriter(job.outfile, size=(width, height), fps=job.fps, audio=job.audio, temp_dir=tmp,
                           audio_seconds=job.seconds, segments=job.segments) as writer:
        for chunk in _batches(_chain_first(first, pairs), batch):
            frames, boxes = [p[0] for p in chunk], [p[1] for p in chunk]
            mels = audio.mel_batch(job.mel, done, done + len(chunk), job.fps)[:, None]
            mouths = _mouths(generate(mels, frames, boxes))
            synced = [blend.paste(frame, box, mouth, options.blend, inplace=not job.still)
                      for frame, box, mouth in zip(frames, boxes, mouths)]  # fmt: skip
            report(STAGE_SYNC, done + len(chunk), job.frames)
            if enhance is not None:
                enhance(synced, boxes)
                report(STAGE_ENHANCE, done + len(chunk), job.frames)
            for frame in synced:
                writer.write(frame)
            done += len(chunk)
        report(STAGE_ENCODE, 0, 1)
    report(STAGE_ENCODE, 1, 1)


def _face_enhancer(enhancer: Optional[Enhancer]) -> Optional[Callable[[List[Frame], list], None]]:
    """(frames, boxes) -> None, enhancing each frame's redrawn lower face in place; None when off."""
    if enhancer is None:
        return None
    runner = runtime.BatchRunner(enhancer.predictor.run, enhancer.batch)  # per run: out-of-memory halves it
    return lambda frames, boxes: facecrop.enhance_frames(frames, boxes, enhancer.size,
                                                         lambda faces: _generate(runner, faces))  # fmt: skip


def _mouth_generator(generator: Union[runtime.Predictor, StillGenerator], batch: int,
                     first: Tuple[Frame, Tuple[int, ...]]) -> Callable[[np.ndarray, List[Frame], list], np.ndarray]:
    """(mels, frames, boxes) → generator output; a still face is encoded once, from the first frame."""
    if isinstance(generator, StillGenerator):
        features = generator.encoder.run(_face_inputs([first[0]], [first[1]]))
        still = runtime.BatchRunner(lambda mels: generator.decoder.run(mels, *features), batch)
        return lambda mels, frames, boxes: _generate(still, mels)
    runner = runtime.BatchRunner(generator.run, batch)
    return lambda mels, frames, boxes: _generate(runner, mels, _face_inputs(frames, boxes))


def _generate(runner: runtime.BatchRunner, *inputs: np.ndarray) -> np.ndarray:
    """Generator output for one batch; a short batch is padded to the full one, so one input shape reaches
    the predictor: each new shape costs oneDNN/cuDNN set-up time and memory that a long-lived app keeps."""
    count = len(inputs[0])
    size = runner.batch
    if size > count:
        inputs = tuple(np.concatenate([a, np.repeat(a[-1:], size - count, axis=0)]) for a in inputs)
    return runner(*inputs)[0][:count]


def _chain_first(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest
