"""What the benchmark runs on: the machine, its inputs (photo, speech, video) and random weights."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

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
# Its boxes (S3FD's offsets: centre x, y; log size w, h): 256 * exp(-1.438 * 0.2) = 192 px, moved 3.4375 * 0.1 * 256
# = 88 px up and left of each anchor, so that every box overlaps the frame. The head's anchors reach two cells
# (128 px) past a frame's right and bottom edges (fc6's padding), and the reference takes whichever box its
# unstable argsort puts first among equal scores: on an AVX2-only CPU the last anchor's, which lipsync.testing's
# default offsets put wholly outside a 1280x720 frame (its crop was empty: inference.py failed).
PLANTED_LOC = (-3.4375, -3.4375, -1.438, -1.438)
MEMORY_SHORT_MINUTES = 1
ENHANCER_SIZE = 512  # GPEN side for --enhancement (the published network); --quick uses a small one
QUICK_ENHANCER_SIZE = 64
ENHANCER_FACES = 4  # faces timed through GPEN alone (2.7 s each at 512 on 2 CPU cores), after one warm batch
ENHANCE_SECONDS = 2.0  # speech of the still case run end to end with face enhancement on
STAGES = ("decode", "detection", "generator", "blend", "encode")
TARGETS = {"runtime_vs_dygraph": 6.0, "still_vs_generator": 0.90, "video_vs_generator": 0.40,
           "memory_growth": 1.1, "memory_mb": 2048.0, "startup_s": 3.0, "picture_job_mb": 1024.0}


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

    from lipsync import cpu

    flags = _cpu_flags()
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "avx2": "avx2" in flags, "features": cpu.cpu_features(),
        "threads": cpu.cpu_threads(),
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


def cpu_model() -> str:
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
        cases.append(Case("still", f"still {still_size(photo)} + {sizes.still_seconds:g} s speech", photo, speech,
                          sizes.still_seconds, output_frames(speech), True))
    if "video" in wanted:
        speech = make_speech(folder, sizes.video_seconds, "video.wav")
        clip = make_video(photo, folder, sizes.video_seconds + VIDEO_MARGIN_S, sizes.video_size, "video.mp4")
        width, height = sizes.video_size
        cases.append(Case("video", f"video {width}x{height}, {sizes.video_seconds:g} s", clip, speech,
                          sizes.video_seconds, output_frames(speech), False))
    return cases


def still_size(photo: Path) -> str:
    import cv2

    height, width = cv2.imread(str(photo)).shape[:2]
    return f"{width}x{height}"


# ---------------------------------------------------------------- weights


def make_weights(models: Path) -> Path:
    """Random Wav2Lip as $LIPSYNC_MODELS/wav2lip_hq.pdparams and a planted S3FD beside it; returns the S3FD path.

    The S3FD's stride-64 head calls every anchor a face (PLANTED_LOC places it) and the others call none
    (lipsync.testing); the file is not called s3fd.pth: that name has a published sha256.
    """
    from lipsync import testing

    return testing.save_random_weights(models, seed=SEED, s3fd_seed=SEED, head=PLANTED_HEAD, loc=PLANTED_LOC)


def reset_peak_rss() -> None:
    """Start VmHWM afresh at the current RSS (Linux: writing 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's high-water resident set (VmHWM), children excluded."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
