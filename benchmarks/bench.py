"""Times every lipsync stage and whole runs on media and random weights it makes itself; prints one table.

    python benchmarks/bench.py                  # still + 15 s speech, 30 s 720p video, generator runtime vs dygraph
    python benchmarks/bench.py --quick          # seconds-long smoke run on tiny inputs
    python benchmarks/bench.py --memory-check   # adds peak RSS of a 1-minute and a --minutes 720p video

Timing does not depend on weight values, so the networks are the real architectures with random
weights. The S3FD classifier heads are planted so a few face-sized anchors per frame score as faces
(as real weights do, so box decoding costs what it will), and every detection goes through real S3FD
inference; the boxes the pipeline follows come from OpenCV's Haar cascade on the same input
(`bench_engine`), since random weights cannot find the real face.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

FPS = 25
SPEECH_TEXT = (
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. "
    "Peter Piper picked a peck of pickled peppers, and we measure every stage of the pipeline."
)
VIDEO_MARGIN_S = 1.0  # the video outlasts the speech, so frames stream once (no ping-pong frame cache)
BACKGROUND = "0x3a4450"  # canvas colour around the photo in the generated video
CANVAS_MARGIN = 1.25  # canvas height / photo height: room above the face, so panning never cuts it off
VIDEO_CRF = 20
VIDEO_PRESET = "veryfast"
SEED = 7
PLANTED_HEAD = "conv6_2"  # S3FD's stride-64 head: a few face-sized candidates per frame, like real weights
PLANTED_LOGIT = 8.0  # face vs background logit in the planted heads
PLANTED_LOC = (2.5, 2.5, -3.47, -3.47)  # box centre +64 px, size 256 * exp(-3.47 * 0.2) = 128 px
MEMORY_SHORT_MINUTES = 1
STAGES = ("decode", "detection", "generator", "blend", "encode")
TARGETS = {"runtime_vs_dygraph": 6.0, "still_vs_generator": 0.85, "video_vs_generator": 0.40,
           "memory_growth": 1.1, "memory_mb": 2048.0}


@dataclass(frozen=True)
class Sizes:
    """How big the inputs are and how many frames each isolated stage measurement uses."""

    still_seconds: float
    video_seconds: float
    video_size: Tuple[int, int]
    detect_frames: int  # consecutive frames for the detection figure (one default chunk: 16 x every 8)
    stage_frames: int  # frames for the generator, blend and encode figures
    sample_frames: int  # decoded frames kept in memory for blend and encode
    repeats: int  # interleaved runtime/dygraph repetitions


FULL = Sizes(15.0, 30.0, (1280, 720), detect_frames=128, stage_frames=128, sample_frames=128, repeats=3)
QUICK = Sizes(0.6, 0.4, (320, 180), detect_frames=10, stage_frames=8, sample_frames=10, repeats=1)


@dataclass(frozen=True)
class Case:
    """One end-to-end scenario: a face input, the speech it says, and its output frame count."""

    key: str
    label: str
    face: Path
    speech: Path
    seconds: float  # speech length
    frames: int  # output frames
    still: bool


_STARTED = time.perf_counter()


def note(message: str) -> None:
    """A progress line on stderr (the table goes to stdout); a default run takes about an hour on 2 cores."""
    print(f"[{time.perf_counter() - _STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- machine


def machine() -> Dict[str, Any]:
    """CPU model, cores, the vector flags that matter to oneDNN, versions, and the load when we started."""
    import cv2
    import paddle

    flags = _cpu_flags()
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "avx2": "avx2" in flags,
        "avx512": any(f.startswith("avx512") for f in flags), "amx": any(f.startswith("amx") for f in flags),
        "python": platform.python_version(), "paddle": paddle.__version__, "paddle_commit": paddle.version.commit[:10],
        "numpy": np.__version__, "opencv": cv2.__version__, "ffmpeg": _ffmpeg_version(),
        "load_average": [round(v, 2) for v in os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }  # fmt: skip


def _cpuinfo_field(name: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def _cpu_flags() -> List[str]:
    return _cpuinfo_field("flags").split()


def _ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-hide_banner", "-version"], capture_output=True, text=True, check=False).stdout
    return out.split("\n", 1)[0].replace("ffmpeg version ", "").split(" ")[0]


# ---------------------------------------------------------------- inputs


def ffmpeg(*args: str) -> None:
    """Run one ffmpeg command; its stderr becomes the error."""
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")


def make_photo(folder: Path) -> Path:
    """scikit-image's public-domain astronaut photo (512x512) as a PNG."""
    import cv2
    from skimage import data

    path = folder / "astronaut.png"
    cv2.imwrite(str(path), np.ascontiguousarray(data.astronaut()[..., ::-1]))
    return path


def make_speech(folder: Path, seconds: float, name: str) -> Path:
    """espeak-ng speech looped to exactly `seconds`, 16 kHz mono wav."""
    base = folder / "espeak.wav"
    if not base.exists():
        subprocess.run(["espeak-ng", "-w", str(base), SPEECH_TEXT], check=True, capture_output=True)
    path = folder / name
    ffmpeg("-stream_loop", "-1", "-i", f"file:{base}", "-t", f"{seconds:.3f}", "-ac", "1", "-ar", "16000",
           f"file:{path}")
    return path


def make_video(photo: Path, folder: Path, seconds: float, size: Tuple[int, int], name: str) -> Path:
    """An H.264 video of the photo panning and zooming on a canvas, made by ffmpeg's filters alone: the face
    moves all the time (a few px per frame, changing direction) but stays in the picture, as a speaker's does.

    No frame passes through Python, so a 10-minute video costs no memory here.
    """
    width, height = size
    tall = f"ceil(ih*{CANVAS_MARGIN}/2)*2"
    canvas = f"pad=ceil({tall}*{width}/{height}/2)*2:{tall}:(ow-iw)/2:(oh-ih)/2:color={BACKGROUND}"
    zoom = "1.2+0.1*sin(2*PI*on/175)"
    pan_x = "(iw-iw/zoom)/2*(1+0.9*sin(2*PI*on/250))"
    pan_y = "(ih-ih/zoom)/2*(1+0.5*sin(2*PI*on/150))"
    motion = f"zoompan=z='{zoom}':x='{pan_x}':y='{pan_y}':d=1:s={width}x{height}:fps={FPS}"
    path = folder / name
    ffmpeg("-loop", "1", "-framerate", str(FPS), "-i", f"file:{photo}", "-vf", f"{canvas},{motion},format=yuv420p",
           "-t", f"{seconds:.3f}", "-c:v", "libx264", "-preset", VIDEO_PRESET, "-crf", str(VIDEO_CRF),
           f"file:{path}")
    return path


def output_frames(speech: Path) -> int:
    """Output frames lipsync makes for this speech (one per mel window)."""
    from lipsync import audio

    return audio.frame_count(audio.melspectrogram(audio.load_audio(speech)).shape[1], FPS)


def make_cases(folder: Path, photo: Path, sizes: Sizes, wanted: Sequence[str]) -> List[Case]:
    """The still-image and the moving-video scenarios, with their inputs written to `folder`."""
    cases = []
    if "still" in wanted:
        speech = make_speech(folder, sizes.still_seconds, "still.wav")
        cases.append(Case("still", f"still {_still_size(photo)} + {sizes.still_seconds:g} s speech", photo, speech,
                          sizes.still_seconds, output_frames(speech), True))
    if "video" in wanted:
        speech = make_speech(folder, sizes.video_seconds, "video.wav")
        clip = make_video(photo, folder, sizes.video_seconds + VIDEO_MARGIN_S, sizes.video_size, "video.mp4")
        width, height = sizes.video_size
        cases.append(Case("video", f"video {width}x{height}, {sizes.video_seconds:g} s", clip, speech,
                          sizes.video_seconds, output_frames(speech), False))
    return cases


def _still_size(photo: Path) -> str:
    import cv2

    height, width = cv2.imread(str(photo)).shape[:2]
    return f"{width}x{height}"


# ---------------------------------------------------------------- weights


def make_weights(models: Path) -> Path:
    """Random Wav2Lip as $LIPSYNC_MODELS/wav2lip_hq.pdparams and a planted S3FD beside it; returns the S3FD path.

    The S3FD file is not called s3fd.pth: that name has a published sha256, which random weights fail.
    """
    import paddle

    from lipsync.model import Wav2Lip
    from lipsync.s3fd import S3FD

    models.mkdir(parents=True, exist_ok=True)
    paddle.seed(SEED)
    paddle.save(Wav2Lip().state_dict(), str(models / "wav2lip_hq.pdparams"))
    detector = S3FD()
    detector.set_state_dict(planted_s3fd(detector.state_dict()))
    path = models / "planted_s3fd.pdparams"
    paddle.save(detector.state_dict(), str(path))
    return path


def planted_s3fd(state: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Random S3FD whose stride-64 head calls every anchor a half-anchor-sized face and the others call none."""
    planted = {name: value.numpy() for name, value in state.items()}
    for name, value in planted.items():
        if "_mbox_" not in name:
            continue
        value[...] = 0.0
        if not name.endswith(".bias"):
            continue
        chosen = name.startswith(f"{PLANTED_HEAD}_")
        if "_mbox_conf" in name:
            value[:] = -PLANTED_LOGIT if chosen else PLANTED_LOGIT
            value[-1] = PLANTED_LOGIT if chosen else -PLANTED_LOGIT  # the last class channel is "face"
        elif chosen:
            value[:] = PLANTED_LOC
    return planted


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
    the work it will do with real weights (a little more: Haar's time is added)."""
    import lipsync
    from lipsync import faces

    class TimedEngine(lipsync.Engine):
        def detector(self, options: Any, device: Any) -> Callable:
            s3fd = super().detector(options, device)
            if options.face_detector != "sfd":
                return s3fd
            haar = faces.HaarDetector()

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
    """video.VideoWriter throughput on count frames (each with a different mouth, so x264 sees change)."""
    from lipsync import blend, video

    rng = np.random.default_rng(SEED)
    shown = [blend.paste(f, box, rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for f in _cycle(frames, 8)]
    height, width = shown[0].shape[:2]

    def encode_all() -> None:
        with video.VideoWriter(folder / "encode.mp4", size=(width, height), fps=FPS, audio=None,
                               temp_dir=folder) as writer:
            for frame in _cycle(shown, count):
                writer.write(frame)

    fps = count / timed(encode_all)[1]
    (folder / "encode.mp4").unlink(missing_ok=True)
    return fps


def stage_figures(case: Case, options: Any, engine: Any, device: Any, sizes: Sizes, folder: Path) -> Dict[str, float]:
    """Decode, detection, blend and encode throughput for one case, each stage alone."""
    from lipsync import faces, pipeline

    frames, decode_fps = decode_stage(case, sizes)
    detect = engine.detector(options, device)
    box, detect_fps = detection_stage(detect, frames, case, sizes, options, pipeline.detection_batch(options, device))
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


def _batches(count: int, batch: int) -> Iterator[slice]:
    for start in range(0, count, batch):
        yield slice(start, min(count, start + batch))


def runtime_fps(predictor: Any, mels: np.ndarray, faces: np.ndarray, batch: int) -> float:
    """Frames/s of our Paddle Inference predictor (Predictor.run per batch)."""

    def run_all() -> None:
        for part in _batches(len(mels), batch):
            predictor.run(mels[part], faces[part])

    return len(mels) / timed(run_all)[1]


def dygraph_fps(model: Any, mels: np.ndarray, faces: np.ndarray, batch: int) -> float:
    """Frames/s of the eager model as PaddleGAN runs it: to_tensor, forward under no_grad, .numpy()."""
    import paddle

    def run_all() -> None:
        with paddle.no_grad():
            for part in _batches(len(mels), batch):
                model(paddle.to_tensor(mels[part]), paddle.to_tensor(faces[part])).numpy()

    return len(mels) / timed(run_all)[1]


def compare_generators(options: Any, inputs: Tuple[np.ndarray, np.ndarray], repeats: int) -> Dict[str, Any]:
    """Runtime and dygraph frames/s, interleaved `repeats` times after one warm-up each, and each one's peak RSS;
    each at its own batch size (ours: pipeline.generator_batch; PaddleGAN's: --wav2lip_batch_size, 128).

    The runtime goes first, so the high-water mark after its warm-up is its own; dygraph's includes it.
    """
    import paddle

    from lipsync import Engine, pipeline, runtime, weights

    device = runtime.choose_device(options.device)
    paddle.set_device("gpu" if device.kind == "gpu" else "cpu")
    ours, seeds = pipeline.generator_batch(options, device), options.wav2lip_batch_size  # each tool's own batch
    predictor = Engine().generator(options, device)
    runtime_fps(predictor, *(a[:ours] for a in inputs), ours)
    runtime_rss = _peak_rss_mb()
    model = weights.load_wav2lip(options.checkpoint)
    dygraph_fps(model, *(a[:seeds] for a in inputs), seeds)
    samples: Dict[str, Any] = {"runtime": [], "dygraph": []}
    for _ in range(repeats):
        samples["runtime"].append(runtime_fps(predictor, *inputs, ours))
        samples["dygraph"].append(dygraph_fps(model, *inputs, seeds))
    return {**samples, "runtime_peak_rss_mb": runtime_rss, "dygraph_peak_rss_mb": _peak_rss_mb()}


# ---------------------------------------------------------------- child processes: each measurement starts fresh


def run_child(task: str, spec: Dict[str, Any], profile: Optional[Path] = None) -> Dict[str, Any]:
    """One measurement in a fresh Python process (optionally under py-spy), so no case inherits another's memory."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps({"task": task, **spec})]
    if profile is not None:
        cmd = [_py_spy(), "record", "--rate", "25", "--idle", "--format", "raw", "--output", str(profile), "--", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the {task} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def _py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


def child_main(spec_json: str) -> None:
    """Child process: run the task the spec names and print its figures and peak RSS as one JSON line."""
    import lipsync

    spec = json.loads(spec_json)
    options = lipsync.LipSyncOptions(**spec["options"])
    tasks = {"generator": _generator_task, "stages": _stages_task, "e2e": _e2e_task}
    result = tasks[spec["task"]](spec, options)
    print(json.dumps({"peak_rss_mb": _peak_rss_mb(), **result}))


def _case_from(spec: Dict[str, Any]) -> Case:
    fields = spec["case"]
    return Case(**{**fields, "face": Path(fields["face"]), "speech": Path(fields["speech"])})


def _sizes_from(spec: Dict[str, Any]) -> Sizes:
    return Sizes(**{**spec["sizes"], "video_size": tuple(spec["sizes"]["video_size"])})


def _generator_task(spec: Dict[str, Any], options: Any) -> Dict[str, Any]:
    sizes = _sizes_from(spec)
    return compare_generators(options, generator_inputs(_case_from(spec), sizes.stage_frames), sizes.repeats)


def _stages_task(spec: Dict[str, Any], options: Any) -> Dict[str, Any]:
    from lipsync import Engine, runtime

    device = runtime.choose_device(options.device)
    return stage_figures(_case_from(spec), options, bench_engine(), device, _sizes_from(spec), Path(spec["folder"]))


def _e2e_task(spec: Dict[str, Any], options: Any) -> Dict[str, Any]:
    """Load and warm the networks the case uses (as the app holds them after its first request), then `runs`
    times: one timed lipsync.run, then the generator alone.

    Each generator-only figure is taken in the same process right after its run, so the e2e/generator
    share compares figures measured under the same load; the best of the runs is kept, as timeit does.
    The peak RSS is the first run's: a picture's run does not use the whole generator the comparison loads.
    """
    started = time.perf_counter()
    from lipsync import pipeline, runtime

    engine = bench_engine()
    device = runtime.choose_device(options.device)
    if options.box is None:
        _warm_detector(engine.detector(options, device), options)
    case = _case_from(spec)
    mels, faces_in = generator_inputs(case, pipeline.generator_batch(options, device))
    if case.still:  # a picture runs the generator split in two (face encoder once)
        split = engine.still_generator(options, device)
        split.decoder.run(mels, *split.encoder.run(faces_in[:1]))  # oneDNN builds its kernels on a first run
    else:
        engine.generator(options, device).run(mels, faces_in)
    loaded = time.perf_counter()
    runs = []
    for _ in range(spec.get("runs", 1)):
        run = _timed_run(case, spec, options, engine)
        runs.append({**run, "generator_fps": _generator_after(engine, case, spec, options)})
    best = min(runs, key=lambda run: run["seconds"])
    return {**best, "load_seconds": loaded - started, "peak_rss_mb": runs[0]["peak_rss_mb"],
            "generator_fps": max(run["generator_fps"] for run in runs),
            "runs": [{"fps": run["frames"] / run["seconds"], "generator_fps": run["generator_fps"]} for run in runs]}


def _timed_run(case: Case, spec: Dict[str, Any], options: Any, engine: Any) -> Dict[str, Any]:
    """One lipsync.run with its seconds, the stages' start/end times and its own peak RSS."""
    from lipsync import pipeline

    _reset_peak_rss()  # the peak is the run's, not the warm-up's
    began = time.perf_counter()
    phases: Dict[str, List[float]] = {}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter() - began
        phases.setdefault(stage, [now, now])[1] = now

    result = pipeline.run(case.face, case.speech, spec["outfile"], options, progress=progress, engine=engine)
    seconds = time.perf_counter() - began
    peak = _peak_rss_mb()
    Path(spec["outfile"]).unlink(missing_ok=True)
    return {"frames": result.frames, "seconds": seconds, "device": result.device, "phases": phases,
            "peak_rss_mb": peak}


def _warm_detector(detect: Callable, options: Any) -> None:
    """One call at each input shape the tracker uses: a whole frame's square canvas and a crop."""
    from lipsync import faces

    side = options.detect_max_side or faces.ROI_SIDE
    for size in (side, faces.ROI_SIDE):
        detect([np.zeros((size, size, 3), np.uint8)])


def _generator_after(engine: Any, case: Case, spec: Dict[str, Any], options: Any) -> float:
    """Generator-only frames/s on the case's inputs, in the process that just ran the case (after one warm batch)."""
    from lipsync import pipeline, runtime

    count = spec.get("sizes", asdict(FULL))["stage_frames"]
    device = runtime.choose_device(options.device, announce=False)
    predictor, batch = engine.generator(options, device), pipeline.generator_batch(options, device)
    mels, faces_in = generator_inputs(case, count)
    predictor.run(mels[:batch], faces_in[:batch])
    return runtime_fps(predictor, mels, faces_in, batch)


def _reset_peak_rss() -> None:
    """Start VmHWM afresh at the current RSS (Linux: writing 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """This process's high-water resident set (VmHWM), children excluded."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _spec(case: Case, options: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    return {"case": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(case).items()}, "options": options,
            **extra}


def end_to_end(case: Case, options: Dict[str, Any], sizes: Sizes, folder: Path,
               profile: Optional[Path] = None, runs: int = 1) -> Dict[str, Any]:
    """One case's best of `runs` whole runs: frames/s and real-time factor with the networks already loaded,
    and the highest peak RSS."""
    spec = _spec(case, options, sizes=asdict(sizes), outfile=str(folder / f"{case.key}-out.mp4"), runs=runs)
    child = run_child("e2e", spec, profile)
    child["fps"] = child["frames"] / child["seconds"]
    child["rtf"] = child["seconds"] / case.seconds
    return child


def profile_summary(raw: Path, top: int = 15) -> List[Tuple[str, float]]:
    """Share of py-spy's samples (idle included) spent inside each lipsync function, largest first."""
    inclusive: Dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        names = {frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
                 for frame in stack.split(";") if "lipsync/" in frame.split(" (")[-1]}
        for name in names:
            inclusive[name] = inclusive.get(name, 0) + int(count)
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    return [(name, count / max(total, 1)) for name, count in ranked]


# ---------------------------------------------------------------- memory check


def memory_check(photo: Path, folder: Path, options: Dict[str, Any], minutes: float) -> Dict[str, Dict[str, Any]]:
    """Peak RSS of whole runs on a 1-minute and a `minutes`-minute 720p video (each input deleted after use)."""
    found = {}
    for length in (MEMORY_SHORT_MINUTES, minutes):
        seconds = length * 60.0
        speech = make_speech(folder, seconds, f"memory-{length:g}.wav")
        clip = make_video(photo, folder, seconds + VIDEO_MARGIN_S, FULL.video_size, f"memory-{length:g}.mp4")
        case = Case(f"memory_{length:g}min", f"video 1280x720, {length:g} min (memory)", clip, speech, seconds,
                    output_frames(speech), False)
        note(f"{case.label}: {case.frames} frames")
        found[case.key] = {"label": case.label, "minutes": length, **end_to_end(case, options, FULL, folder)}
        note(f"{case.label}: peak RSS {found[case.key]['peak_rss_mb']:.0f} MB, {found[case.key]['fps']:.2f} frames/s")
        clip.unlink()
        speech.unlink()
    return found


# ---------------------------------------------------------------- report


def _num(value: Optional[float], digits: int = 0) -> str:
    """A figure with about three significant digits; '–' when it does not apply."""
    if value is None:
        return "–"
    if digits:
        return f"{value:.{digits}f}"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


COLUMNS = ("case", "decode", "detection", "generator", "blend", "encode", "e2e fps", "e2e/gen", "RTF", "peak RSS MB")


def table_rows(results: Dict[str, Any]) -> List[List[str]]:
    """One row per case: stage frames/s, end-to-end frames/s, share of generator-only speed, RTF, peak RSS."""
    gen = results["generator"]
    rows = []
    for case in results["cases"].values():
        e2e = case["e2e"]
        stages = [_generator_fps(e2e, gen) if s == "generator" else case["stages"][s] for s in STAGES]
        rows.append([case["label"], *map(_num, stages), _num(e2e["fps"]), _share(e2e, gen), _num(e2e["rtf"]),
                     _num(e2e["peak_rss_mb"])])
    for kind, label in (("runtime", "generator alone, runtime (Paddle Inference)"),
                        ("dygraph", "generator alone, dygraph (PaddleGAN's path)")):
        fps = gen[f"{kind}_fps"]
        rows.append([label, "–", "–", _num(fps), "–", "–", _num(fps), f"{100 * fps / gen['runtime_fps']:.0f}%",
                     _num(FPS / fps), _num(gen[f"{kind}_peak_rss_mb"])])
    for case in results.get("memory", {}).values():
        rows.append([case["label"], "–", "–", _num(_generator_fps(case, gen)), "–", "–", _num(case["fps"]),
                     _share(case, gen), _num(case["rtf"]), _num(case["peak_rss_mb"])])
    return rows


def _generator_fps(e2e: Dict[str, Any], gen: Dict[str, Any]) -> float:
    """Generator-only frames/s measured in the end-to-end run's process (older results: the comparison's)."""
    return e2e.get("generator_fps", gen["runtime_fps"])


def _share(e2e: Dict[str, Any], gen: Dict[str, Any]) -> str:
    return f"{100 * e2e['fps'] / _generator_fps(e2e, gen):.0f}%"


def markdown_table(rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def target_lines(results: Dict[str, Any]) -> List[str]:
    """Each issue target with the figure measured in this run."""
    gen = results["generator"]
    cases, memory = results["cases"], results.get("memory", {})
    lines = [_target("generator runtime / dygraph", gen["ratio"], TARGETS["runtime_vs_dygraph"], "x")]
    for key, name in (("still", "still e2e / generator"), ("video", "video e2e / generator")):
        if key in cases:
            share = cases[key]["e2e"]["fps"] / _generator_fps(cases[key]["e2e"], gen)
            lines.append(_target(name, share, TARGETS[f"{key}_vs_generator"], "%"))
    if len(memory) == 2:
        short, long = memory.values()
        growth = long["peak_rss_mb"] / short["peak_rss_mb"]
        lines.append(_target(f"peak RSS {long['minutes']:g} min / {short['minutes']:g} min", growth,
                             TARGETS["memory_growth"], "x", at_most=True))
        lines.append(_target(f"peak RSS {long['minutes']:g} min (MB)", long["peak_rss_mb"], TARGETS["memory_mb"], "",
                             at_most=True))
    return lines


def _target(name: str, value: float, goal: float, unit: str, at_most: bool = False) -> str:
    met = value <= goal if at_most else value >= goal
    shown = (lambda v: f"{100 * v:.0f}%") if unit == "%" else (lambda v: f"{v:.2f}{unit}" if unit else f"{v:.0f}")
    return f"- {name}: {shown(value)} (target {'≤' if at_most else '≥'} {shown(goal)}) {'met' if met else 'MISSED'}"


def print_report(results: Dict[str, Any]) -> None:
    results = {**results, "generator": _generator_summary(results["generator"])}
    box = results["machine"]
    print(f"machine: {box['cpu']}, {box['cores']} cores, avx2 {_yes(box['avx2'])}, avx512 {_yes(box['avx512'])}, "
          f"amx {_yes(box['amx'])}; paddle {box['paddle']} ({box['paddle_commit']}), numpy {box['numpy']}, "
          f"opencv {box['opencv']}, ffmpeg {box['ffmpeg']}, python {box['python']}")
    print(f"date: {box['date']}; device: {results['device']}; load average at start {box['load_average']}, "
          f"at end {results['load_average_end']}")
    print("stage columns: output frames/s each stage sustains alone (a still is decoded and detected once); "
          "a case's generator figure is taken in its e2e process right after each run; e2e: lipsync.run with the "
          "networks loaded, in a fresh process, best of the runs (a picture's run uses the generator split in two: "
          "face encoder once); e2e/gen = best e2e / best generator; RTF = run time / speech length; peak RSS: "
          "the first run's\n")
    print(markdown_table(table_rows(results)))
    spread = results["generator"]
    print(f"\ngenerator frames/s over {len(spread['runtime'])} interleaved repeats (the table shows the best): runtime "
          f"{_nums(spread['runtime'])}; dygraph {_nums(spread['dygraph'])}; runtime/dygraph per repeat "
          f"{_nums(spread['pair_ratios'])}")
    for case in results["cases"].values():
        runs = case["e2e"].get("runs", [])
        if len(runs) > 1:
            print(f"{case['label']}, {len(runs)} runs: e2e {_nums(r['fps'] for r in runs)} frames/s, generator after "
                  f"each {_nums(r['generator_fps'] for r in runs)} frames/s, e2e/gen per run "
                  f"{', '.join(_percent(r['fps'] / r['generator_fps']) for r in runs)}")
    print("\n".join(["targets:", *target_lines(results)]))
    if results.get("profile"):
        print(f"\n{results.get('profiled', 'video case')}, share of wall time inside lipsync functions "
              "(py-spy, idle included):")
        print("\n".join(f"- {100 * share:5.1f}%  {name}" for name, share in results["profile"]))


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# ---------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run on tiny inputs")
    parser.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto", help="where the networks run")
    parser.add_argument("--cases", default="still,video", help="comma-separated: still, video")
    parser.add_argument("--still-seconds", type=float, help="speech length for the still case (default 15)")
    parser.add_argument("--video-seconds", type=float, help="video and speech length for the video case (default 30)")
    parser.add_argument("--repeats", type=int, help="interleaved runtime/dygraph repetitions (default 3)")
    parser.add_argument("--memory-check", action="store_true", help="also measure peak RSS for 1 and --minutes minutes")
    parser.add_argument("--minutes", type=float, default=10.0, help="long video for --memory-check (default 10)")
    parser.add_argument("--memory-detector", choices=("sfd", "haar"), default="sfd",
                        help="face detector for --memory-check (haar keeps a 10-minute run short on CPU)")
    parser.add_argument("--profile", type=Path, help="record the last case's run (the video, or the still with --cases still) with py-spy "
                             "into this raw file")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--report", type=Path, help="print the table of a saved --json file and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def chosen_sizes(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    if args.still_seconds:
        sizes = replace(sizes, still_seconds=args.still_seconds)
    if args.video_seconds:
        sizes = replace(sizes, video_seconds=args.video_seconds)
    if args.repeats:
        sizes = replace(sizes, repeats=args.repeats)
    return sizes


def measure(args: argparse.Namespace, folder: Path) -> Dict[str, Any]:
    """Every figure of the table, with inputs and weights made under `folder`; each measurement in its own process."""
    sizes = chosen_sizes(args)
    detector_weights = make_weights(Path(os.environ["LIPSYNC_MODELS"]))
    options = {"device": args.device, "detector_weights": str(detector_weights)}
    photo = make_photo(folder)
    cases = make_cases(folder, photo, sizes, args.cases.split(","))
    note(f"inputs and weights ready; generator runtime vs dygraph, {sizes.repeats} x {sizes.stage_frames} frames")
    samples = run_child("generator", _spec(cases[0], options, sizes=asdict(sizes)))
    results: Dict[str, Any] = {"device": _device_kind(args.device), "sizes": asdict(sizes),
                               "generator": _generator_summary(samples), "cases": {}}
    note(f"generator: runtime {_nums(samples['runtime'])} frames/s, dygraph {_nums(samples['dygraph'])} frames/s")
    for case in cases:
        stages = run_child("stages", _spec(case, options, sizes=asdict(sizes), folder=str(folder)))
        stages.pop("peak_rss_mb")
        note(f"{case.label}: stages {_nums(stages.values())} frames/s; end to end, {case.frames} frames")
        e2e = end_to_end(case, options, sizes, folder, args.profile if case is cases[-1] else None,
                         sizes.repeats)
        note(f"{case.label}: end to end {e2e['fps']:.2f} frames/s, peak RSS {e2e['peak_rss_mb']:.0f} MB")
        results["cases"][case.key] = {"label": case.label, "frames": case.frames, "stages": stages, "e2e": e2e}
    if args.profile is not None and args.profile.exists():
        results["profile"], results["profiled"] = profile_summary(args.profile), cases[-1].label
    if args.memory_check:
        memory_options = {**options, "face_detector": args.memory_detector}
        results["memory"] = memory_check(photo, folder, memory_options, args.minutes)
    return results


def _device_kind(requested: str) -> str:
    from lipsync import runtime

    return runtime.choose_device(requested).kind


def _nums(values: Any) -> str:
    return ", ".join(_num(v) for v in values if isinstance(v, (int, float)))


def _generator_summary(samples: Dict[str, Any]) -> Dict[str, Any]:
    """Best of the repeats for each (as timeit does: slower repeats measure the other processes on the machine)."""
    runtime_fps_, dygraph_fps_ = max(samples["runtime"]), max(samples["dygraph"])
    pairs = [r / d for r, d in zip(samples["runtime"], samples["dygraph"])]
    return {**samples, "runtime_fps": runtime_fps_, "dygraph_fps": dygraph_fps_, "ratio": runtime_fps_ / dygraph_fps_,
            "pair_ratios": pairs, "median_pair_ratio": statistics.median(pairs)}


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    import lipsync  # noqa: F401  (before paddle: it quiets paddle's C++ logging)

    if args.child:
        child_main(args.child)
        return
    if args.report:
        print_report(json.loads(args.report.read_text()))
        return
    box = machine()  # imports paddle, which installs its own SIGTERM handler: ours must come after
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so children stop and the temp dir is removed
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-") as tmp:
        folder = Path(tmp)
        os.environ.update({"LIPSYNC_MODELS": str(folder / "models"), "LIPSYNC_CACHE": str(folder / "cache"),
                           "HF_HUB_OFFLINE": "1"})  # fmt: skip
        results = measure(args, folder)
    results["machine"] = box
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
