"""Orchestrates one run: audio → faces → generator → blend → video, with progress and a private temp dir."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

from . import audio, blend, faces, native, runtime, video, weights
from .errors import LipSyncError
from .options import LipSyncOptions
from .types import STAGE_AUDIO, STAGE_ENCODE, STAGE_FACES, STAGE_LOAD, STAGE_SYNC, Frame, Progress

log = logging.getLogger(__name__)

FACE_SIZE = 96  # generator input/output side, px
WAV2LIP_SPECS = [((None, 1, audio.N_MELS, audio.MEL_STEP), "float32"), ((None, 6, FACE_SIZE, FACE_SIZE), "float32")]
FACE_ENCODER_SPECS = [WAV2LIP_SPECS[1]]
S3FD_SPECS = [((None, 3, None, None), "float32")]
WAV2LIP_GPU_ITEM_MB = 8.5  # GPU activations per face in a generator batch (fp32)
S3FD_GPU_ITEM_MB = 21  # GPU activations per 160×160 tracking crop (~15) with room (a 640×360 frame: 130; the pool grows)
CPU_GENERATOR_BATCH = 16  # faces per generator call on CPU: within 6 % of 128's speed, for a third of the memory
CPU_DETECTOR_BATCH = 2  # frames per S3FD call on CPU: its speed is flat in the batch, its memory is not
MIN_FRAME_SIDE = 32  # px: pictures and videos smaller than this cannot hold a face the generator can use
FACES_REPORT_EVERY = 25  # frames between progress reports while reading and detecting
LOOP_MARGIN_FRAMES = 2  # cache frames for ping-pong when the video is within this of the audio's length
OUTPUT_SUFFIX = ".mp4"

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
    notes: Tuple[str, ...]


@dataclass(frozen=True)
class StillGenerator:
    """The generator in two predictors for a still face: the face encoder (once per run), then the decoder,
    which takes the mel windows and that one face's skip features."""

    encoder: runtime.Predictor
    decoder: runtime.Predictor


class Engine:
    """The loaded networks, built once per process and shared by every run (thread-safe)."""

    def __init__(self) -> None:
        self._cache: Dict[Tuple[str, ...], object] = {}
        self._lock = threading.Lock()

    def generator(self, options: LipSyncOptions, device: runtime.Device) -> runtime.Predictor:
        path = weights.resolve_weights(options.checkpoint, "wav2lip")
        build = lambda: weights.load_wav2lip(str(path))  # noqa: E731
        pool = (generator_batch(options, device), WAV2LIP_GPU_ITEM_MB)
        return self._predictor(path, "wav2lip", build, WAV2LIP_SPECS, device, pool, probe=_generator_probe)

    def still_generator(self, options: LipSyncOptions, device: runtime.Device) -> StillGenerator:
        """The generator split for a picture (or --static): its face encoder runs once, the rest per batch."""
        from .model import FaceEncoder, StillFaceDecoder

        path = weights.resolve_weights(options.checkpoint, "wav2lip")
        load = lambda: weights.load_wav2lip(str(path))  # noqa: E731
        encoder = self._predictor(path, "wav2lip-face-encoder", lambda: FaceEncoder(load()), FACE_ENCODER_SPECS,
                                  device, (1, WAV2LIP_GPU_ITEM_MB))  # fmt: skip

        def probe() -> Tuple[np.ndarray, ...]:
            mel, face_in = _generator_probe()
            return (mel, *encoder.run(face_in[:1]))

        pool = (generator_batch(options, device), WAV2LIP_GPU_ITEM_MB)
        decoder = self._predictor(path, "wav2lip-still-decoder", lambda: StillFaceDecoder(load()),
                                  _still_decoder_specs(), device, pool, probe=probe)  # fmt: skip
        return StillGenerator(encoder, decoder)

    def detector(self, options: LipSyncOptions, device: runtime.Device) -> faces.DetectFn:
        """A detector for one run: S3FD through its shared predictor (its batch halves on out-of-memory), or Haar."""
        if options.face_detector == "haar":
            return self._cached(("haar",), faces.HaarDetector)  # type: ignore[return-value]
        from . import s3fd

        path = weights.resolve_weights(options.detector_weights, "s3fd")
        batch = detection_batch(options, device)
        predictor = self._predictor(path, "s3fd", lambda: s3fd.load_s3fd(path), S3FD_SPECS, device,
                                    (batch, S3FD_GPU_ITEM_MB))  # fmt: skip
        return faces.S3FDDetector(runtime.BatchRunner(predictor.run, batch))

    def _predictor(
        self, path: Path, arch: str, build, specs, device: runtime.Device, pool: Tuple[int, float], probe=None
    ) -> runtime.Predictor:
        """A predictor per (weights, device); pool = (batch, MB per item) sizes the GPU memory pool; probe()
        gives inputs to compare a faster precision with fp32 on (none: fp32)."""
        key = runtime.export_key(path, arch)

        def make() -> runtime.Predictor:
            prefix = runtime.export_static(build, specs, weights.cache_dir() / "static" / key)
            pool_mb = runtime.gpu_pool_mb(prefix, *pool)
            if probe is None:
                return runtime.Predictor(prefix, device, pool_mb=pool_mb)
            return runtime.fastest_predictor(prefix, device, probe(), pool_mb=pool_mb)

        return self._cached((arch, key, device.kind), make)  # type: ignore[return-value]

    def _cached(self, key: Tuple[str, ...], make: Callable[[], object]) -> object:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]


_default_engine = Engine()


def generator_batch(options: LipSyncOptions, device: runtime.Device) -> int:
    """Faces per generator call: the option on a GPU, at most CPU_GENERATOR_BATCH on a CPU."""
    return options.wav2lip_batch_size if device.kind == "gpu" else min(options.wav2lip_batch_size, CPU_GENERATOR_BATCH)


def detection_batch(options: LipSyncOptions, device: runtime.Device) -> int:
    """Frames per detector call: the option on a GPU, at most CPU_DETECTOR_BATCH on a CPU."""
    return options.face_det_batch_size if device.kind == "gpu" else min(options.face_det_batch_size, CPU_DETECTOR_BATCH)


def _still_decoder_specs() -> List[runtime.InputSpec]:
    from .model import FACE_FEATURE_SHAPES  # imports paddle: not before a run needs it

    return [WAV2LIP_SPECS[0], *(((1, *shape), "float32") for shape in FACE_FEATURE_SHAPES)]


def _generator_probe(batch: int = 4, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Fixed generator inputs (speech-range mel, face-like pixel values) to compare precisions on."""
    rng = np.random.default_rng(seed)
    mel = rng.uniform(-audio.MAX_ABS, 0.0, (batch, 1, audio.N_MELS, audio.MEL_STEP)).astype(np.float32)
    faces_in = rng.uniform(0.2, 0.8, (batch, 6, FACE_SIZE, FACE_SIZE)).astype(np.float32)
    faces_in[:, :3, FACE_SIZE // 2 :] = 0.0
    return mel, faces_in


def run(
    face: PathLike,
    audio_path: PathLike,
    outfile: PathLike,
    options: Optional[LipSyncOptions] = None,
    progress: Optional[Progress] = None,
    engine: Optional[Engine] = None,
) -> RunResult:
    """Make the face in `face` (picture or video) speak `audio_path`; write an H.264/AAC mp4 to `outfile`."""
    options = options or LipSyncOptions()
    report = progress or _no_progress
    engine = engine or _default_engine
    started = time.perf_counter()
    video.require_ffmpeg()
    face_p, audio_p, out_p = _check_paths(face, audio_path, outfile)
    created = _missing_folders(out_p.parent)
    try:
        with tempfile.TemporaryDirectory(prefix="lipsync-") as tmp:
            job = _prepare(face_p, audio_p, out_p, options, report)  # bad input is told before paddle loads
            device = runtime.choose_device(options.device)
            _render(job, options, engine, device, Path(tmp), report)
    except BaseException:
        _remove_empty(created)
        raise
    finally:
        native.release_freed_memory()
    seconds = time.perf_counter() - started
    return RunResult(out_p, job.frames, job.fps, seconds, _describe(device), options.checkpoint,
                     runtime.paddle_version(), job.notes)  # fmt: skip


def _render(job: _Job, options: LipSyncOptions, engine: Engine, device: runtime.Device, tmp: Path,
            report: Progress) -> None:
    """Load the networks, find the faces, then generate, blend and encode."""
    report(STAGE_LOAD, 0, 1)
    generator = engine.still_generator(options, device) if job.still else engine.generator(options, device)
    detect = None if options.box is not None else engine.detector(options, device)
    report(STAGE_LOAD, 1, 1)
    found = _locate_faces(job, options, detect, detection_batch(options, device), tmp, report)
    try:
        _synthesize(job, options, generator, generator_batch(options, device), found, tmp, report)
    finally:
        if found.cache is not None:
            found.cache.close()


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def _describe(device: runtime.Device) -> str:
    return device.kind if device.reason == "requested" else f"{device.kind} ({device.reason})"


def _check_paths(face: PathLike, audio_path: PathLike, outfile: PathLike) -> Tuple[Path, Path, Path]:
    """Inputs must be non-empty files; the output an .mp4 that is neither of them, in a folder we can make."""
    face_p, audio_p, out_p = Path(face).expanduser(), Path(audio_path).expanduser(), Path(outfile).expanduser()
    for what, path in (("face", face_p), ("audio", audio_p)):
        if not path.is_file():
            raise LipSyncError(f"{what} file not found: {path}")
        if path.stat().st_size == 0:
            raise LipSyncError(f"the {what} file {path.name} is empty (0 bytes); was the upload or copy complete?")
    if out_p.suffix.lower() != OUTPUT_SUFFIX:
        raise LipSyncError(f"the output must be an .mp4 file (got {out_p.name})")
    if out_p.is_dir():
        raise LipSyncError(f"the output {out_p} is a folder; give a file name ending in .mp4")
    for what, path in (("face", face_p), ("audio", audio_p)):
        if out_p.exists() and out_p.samefile(path):
            raise LipSyncError(f"the output {out_p.name} is the {what} input: give another output name, "
                               "so the input is not overwritten")
    _check_creatable(out_p.parent)
    return face_p, audio_p, out_p.resolve()


def _missing_folders(folder: Path) -> List[Path]:
    """The folders that do not exist yet on the way to `folder`, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


def _check_creatable(folder: Path) -> None:
    """The output folder exists or can be made: its nearest existing ancestor is a writable folder."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        raise LipSyncError(f"cannot create the output folder {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LipSyncError(f"cannot write the output into {folder}: {existing} is not writable")


def _remove_empty(folders: List[Path]) -> None:
    """Take back the folders a failed run made for its output (deepest first), if they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _prepare(face: Path, audio_path: Path, outfile: Path, options: LipSyncOptions, report: Progress) -> _Job:
    """Decode the audio to mel windows and probe the face input."""
    report(STAGE_AUDIO, 0, 1)
    info = video.probe(face)
    _check_size(info)
    wav = audio.load_audio(audio_path)
    mel = audio.melspectrogram(wav)
    still = info.is_image or options.static
    fps = options.fps if info.is_image else info.fps
    report(STAGE_AUDIO, 1, 1)
    frames = audio.frame_count(mel.shape[1], fps)
    return _Job(face, audio_path, outfile, info, mel, fps, frames, still, audio.duration(wav), _size_notes(info, options))


def _check_size(info: video.MediaInfo) -> None:
    """A picture or video too small to hold a face is the user's mistake, said before any work."""
    if min(info.width, info.height) < MIN_FRAME_SIDE:
        raise LipSyncError(f"{info.path.name} is only {info.width}×{info.height} px: too small to hold a face "
                           f"(give at least {MIN_FRAME_SIDE}×{MIN_FRAME_SIDE} px, ideally a few hundred)")


def _size_notes(info: video.MediaInfo, options: LipSyncOptions) -> Tuple[str, ...]:
    """Say so when frames will be scaled down to what video players decode."""
    width, height = info.width // options.resize_factor, info.height // options.resize_factor
    if video.fitted_size(width, height) == (width, height):
        return ()
    return (f"{info.path.name} is {info.width}×{info.height} px: frames are scaled down to "
            f"{video.MAX_FRAME_PIXELS / 1e6:.1f} megapixels at most, the largest size video players decode",)


def _source_frames(job: _Job, options: LipSyncOptions) -> Iterator[Frame]:
    """The face input's frames after the seed's resize/rotate/crop edits (one for a still)."""
    stream = video.read_frames(job.face, job.info)
    try:
        for frame in stream:
            yield video.fit(video.transform(frame, options.resize_factor, options.rotate, options.crop))
            if job.still:
                return
    finally:
        stream.close()


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
    if detect is None and cache is None:
        return _Faces(np.array([faces.fixed_box(options.box, _first_frame(job, options).shape)]))
    tracker = None
    if detect is not None:
        every = 1 if job.still else options.detect_every
        tracker = faces.FaceTracker(detect, every, options.detect_max_side, batch, retry_larger=job.still)
    total = 1 if job.still else min(job.frames, job.info.frame_count or job.frames)
    shape: Tuple[int, ...] = ()
    for index, frame in enumerate(_limit(_source_frames(job, options), job.frames)):
        shape = frame.shape
        if cache is not None:
            cache.append(frame)
        if tracker is not None:
            tracker.push(frame)
        if index % FACES_REPORT_EVERY == 0:
            report(STAGE_FACES, index, total)
    report(STAGE_FACES, total, total)
    if tracker is None:
        return _Faces(np.array([faces.fixed_box(options.box, shape)]), cache)  # type: ignore[arg-type]
    return _Faces(_finish_boxes(tracker.finish(), shape, job, options), cache)


def _first_frame(job: _Job, options: LipSyncOptions) -> Frame:
    frame = next(_source_frames(job, options), None)
    if frame is None:
        raise LipSyncError(f"no frame could be read from {job.face.name}")
    return frame


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
    if options.box is None:
        boxes = faces.apply_pads(boxes, options.pads, shape)
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
    stream = _source_frames(job, options)
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
) -> None:
    """Run the generator batch by batch, paste the mouths back, and stream frames into the encoder."""
    pairs = _output_frames(job, options, found)
    first = next(pairs)
    generate = _mouth_generator(generator, batch, first)
    height, width = first[0].shape[:2]
    done = 0
    with video.VideoWriter(job.outfile, size=(width, height), fps=job.fps, audio=job.audio, temp_dir=tmp,
                           audio_seconds=job.seconds) as writer:
        for chunk in _batches(_chain_first(first, pairs), batch):
            frames, boxes = [p[0] for p in chunk], [p[1] for p in chunk]
            mels = audio.mel_batch(job.mel, done, done + len(chunk), job.fps)[:, None]
            mouths = _mouths(generate(mels, frames, boxes))
            for frame, box, mouth in zip(frames, boxes, mouths):
                writer.write(blend.paste(frame, box, mouth, options.blend, inplace=not job.still))
            done += len(chunk)
            report(STAGE_SYNC, done, job.frames)
        report(STAGE_ENCODE, 0, 1)
    report(STAGE_ENCODE, 1, 1)


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
