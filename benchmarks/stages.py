"""Each stage timed on its own, and the generator through Paddle Inference against dygraph."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from workload import FPS, SEED, Case, Sizes, peak_rss_mb

# ---------------------------------------------------------------- isolated stages


def timed(work: Callable[[], Any]) -> Tuple[Any, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def decode_stage(case: Case, sizes: Sizes) -> Tuple[List[np.ndarray], float]:
    """Frames kept for later stages, and decode throughput in output frames/s (a still decodes once)."""
    from lipsync import video

    info = video.probe(case.face)
    kept: List[np.ndarray] = []

    def read_all() -> int:
        count = 0
        for frame in video.read_frames(case.face, info):
            count += 1
            if len(kept) < sizes.sample_frames:
                kept.append(frame)
        return count

    count, seconds = timed(read_all)
    return kept, (case.frames if case.still else count) / seconds


def detection_stage(detect: Callable, frames: List[np.ndarray], case: Case, sizes: Sizes,
                    options: Any, batch: int) -> Tuple[Any, float]:
    """The first face box, and detection throughput as the pipeline detects: a FaceTracker over consecutive
    frames (keyframes every detect_every frames, in crops around the face; a still is detected once)."""
    from lipsync import faces

    chosen = frames[:1] if case.still else frames[: sizes.detect_frames]
    every = 1 if case.still else options.detect_every

    def detect_all() -> list:
        tracker = faces.FaceTracker(detect, every, options.detect_max_side, batch, retry_larger=case.still)
        for frame in chosen:
            tracker.push(frame)
        return tracker.finish()

    detect_all()  # builds the predictor's kernels for these input sizes
    boxes, seconds = timed(detect_all)
    found = [b for b in boxes if b is not None]
    if not found:
        raise RuntimeError("no face found in the benchmark's photo")
    return found[0], (case.frames if case.still else len(chosen)) / seconds


def bench_engine() -> Any:
    """A lipsync.Engine whose S3FD runs for real, so its cost is measured, but whose boxes come from OpenCV's
    Haar cascade: random S3FD weights find no face, and the tracker must follow the real, moving face to do
    the work it will do with real weights (a little more: Haar's time is added). Both are the engine's own,
    remembering a picture's searches when a run's detector does (as S3FD alone would)."""
    import lipsync

    class TimedEngine(lipsync.Engine):
        def detector(self, options: Any, device: Any, remember: bool = False) -> Callable:
            s3fd = super().detector(options, device, remember)
            if options.face_detector != "sfd":
                return s3fd
            haar = super().detector(replace(options, face_detector="haar"), device, remember)

            def detect(frames: Sequence[np.ndarray]) -> list:
                s3fd(frames)
                return haar(frames)

            return detect

    return TimedEngine()


def _cycle(items: Sequence[Any], count: int) -> Iterator[Any]:
    for index in range(count):
        yield items[index % len(items)]


def blend_stage(frames: List[np.ndarray], box: Tuple[int, ...], mode: str, still: bool, count: int) -> float:
    """blend.paste throughput on count frames; a still pastes into a copy each frame, as the pipeline does."""
    from lipsync import blend

    rng = np.random.default_rng(SEED)
    mouths = rng.integers(0, 256, (8, 96, 96, 3), dtype=np.uint8)

    def paste_all() -> None:
        for index, frame in enumerate(_cycle(frames, count)):
            blend.paste(frame, box, mouths[index % len(mouths)], mode, inplace=not still)

    return count / timed(paste_all)[1]


def encode_stage(frames: List[np.ndarray], box: Tuple[int, ...], count: int, folder: Path) -> float:
    """encoding.VideoWriter throughput on count frames (each with a different mouth, so x264 sees change)."""
    from lipsync import blend, encoding

    rng = np.random.default_rng(SEED)
    shown = [blend.paste(f, box, rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for f in _cycle(frames, 8)]
    height, width = shown[0].shape[:2]

    def encode_all() -> None:
        with encoding.VideoWriter(folder / "encode.mp4", size=(width, height), fps=FPS, audio=None,
                                  temp_dir=folder) as writer:
            for frame in _cycle(shown, count):
                writer.write(frame)

    fps = count / timed(encode_all)[1]
    (folder / "encode.mp4").unlink(missing_ok=True)
    return fps


def stage_figures(case: Case, options: Any, engine: Any, device: Any, sizes: Sizes, folder: Path) -> Dict[str, float]:
    """Decode, detection, blend and encode throughput for one case, each stage alone."""
    from lipsync import faces
    from lipsync.engine import detection_batch

    frames, decode_fps = decode_stage(case, sizes)
    detect = engine.detector(options, device)
    box, detect_fps = detection_stage(detect, frames, case, sizes, options, detection_batch(options, device))
    padded = tuple(int(v) for v in faces.apply_pads(np.array([box]), options.pads, frames[0].shape)[0])
    return {
        "decode": decode_fps, "detection": detect_fps,
        "blend": blend_stage(frames, padded, options.blend, case.still, sizes.stage_frames),
        "encode": encode_stage(frames, padded, sizes.stage_frames, folder),
    }  # fmt: skip


# ---------------------------------------------------------------- generator: runtime vs dygraph


def generator_inputs(case: Case, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """count mel windows of the case's speech and 96x96 face inputs cut from its photo, as the model takes them."""
    import cv2

    from lipsync import audio, video

    mel = audio.melspectrogram(audio.load_audio(case.speech))
    windows = audio.mel_batch(mel, 0, count, FPS)
    mels = np.stack(list(_cycle(windows, count)))[:, None]
    frame = next(video.read_frames(case.face, video.probe(case.face)))
    height, width = frame.shape[:2]
    crop = cv2.resize(frame[height // 5 : height // 2, width // 3 : 2 * width // 3], (96, 96))
    masked = crop.copy()
    masked[48:] = 0
    face = np.concatenate([masked, crop], axis=2).astype(np.float32).transpose(2, 0, 1) / 255.0
    return np.ascontiguousarray(mels, dtype=np.float32), np.ascontiguousarray(np.repeat(face[None], count, axis=0))


def batch_slices(count: int, batch: int) -> Iterator[slice]:
    for start in range(0, count, batch):
        yield slice(start, min(count, start + batch))


def runtime_fps(predictor: Any, mels: np.ndarray, faces: np.ndarray, batch: int) -> float:
    """Frames/s of our Paddle Inference predictor (Predictor.run per batch)."""

    def run_all() -> None:
        for part in batch_slices(len(mels), batch):
            predictor.run(mels[part], faces[part])

    return len(mels) / timed(run_all)[1]


def ahead_fps(predictor: Any, mels: np.ndarray, faces: np.ndarray, batch: int) -> float:
    """Frames/s of the predictor fed as a run feeds it: the next batches drawn while one is handed back."""
    import functools

    from lipsync import synth

    def run_all() -> None:
        with synth.Ahead(synth.chunks_in_flight(0, batch)) as ahead:
            for part in batch_slices(len(mels), batch):
                ahead.push(functools.partial(predictor.run, mels[part], faces[part]))
            ahead.drain()

    return len(mels) / timed(run_all)[1]


def dygraph_fps(model: Any, mels: np.ndarray, faces: np.ndarray, batch: int) -> float:
    """Frames/s of the eager model as PaddleGAN runs it: to_tensor, forward under no_grad, .numpy()."""
    import paddle

    def run_all() -> None:
        with paddle.no_grad():
            for part in batch_slices(len(mels), batch):
                model(paddle.to_tensor(mels[part]), paddle.to_tensor(faces[part])).numpy()

    return len(mels) / timed(run_all)[1]


def compare_generators(options: Any, inputs: Tuple[np.ndarray, np.ndarray], repeats: int) -> Dict[str, Any]:
    """Runtime and dygraph frames/s, interleaved `repeats` times after one warm-up each, and each one's peak RSS;
    each at its own batch size (ours: engine.generator_batch; PaddleGAN's: --wav2lip_batch_size, 128).

    The runtime goes first, so the high-water mark after its warm-up is its own; dygraph's includes it.
    """
    import paddle

    from lipsync import Engine, runtime, weights
    from lipsync.engine import generator_batch

    device = runtime.choose_device(options.device)
    paddle.set_device("gpu" if device.kind == "gpu" else "cpu")
    ours, seeds = generator_batch(options, device), options.wav2lip_batch_size  # each tool's own batch
    predictor = Engine().generator(options, device)
    runtime_fps(predictor, *(a[:ours] for a in inputs), ours)
    runtime_rss = peak_rss_mb()
    model = weights.load_wav2lip(options.checkpoint)
    dygraph_fps(model, *(a[:seeds] for a in inputs), seeds)
    samples: Dict[str, Any] = {"runtime": [], "dygraph": []}
    for _ in range(repeats):
        samples["runtime"].append(runtime_fps(predictor, *inputs, ours))
        samples["dygraph"].append(dygraph_fps(model, *inputs, seeds))
    return {**samples, "runtime_peak_rss_mb": runtime_rss, "dygraph_peak_rss_mb": peak_rss_mb()}
