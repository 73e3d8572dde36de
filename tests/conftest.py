"""Shared test media and weights: all made at test time, nothing downloaded.

Weights are randomly initialised networks of the real architectures (lipsync.testing, shared with the
benchmarks), saved in the real formats and found through $LIPSYNC_MODELS exactly as a user's files would be.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest

from lipsync import audio, testing

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
SPEECH_TEXT = "Hello there. This face is speaking words it never said."
VIDEO_FPS = 25
VIDEO_SECONDS = 2

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers such as torchfile_writer

# gradio and gradio_client fix their cache folder (uploads, downloaded results) when imported, which test modules do
# at collection, before any fixture: without this each run left its videos in /tmp/gradio. Removed at exit.
GRADIO_DIR = tempfile.mkdtemp(prefix="lipsync-tests-gradio-")
os.environ.setdefault("GRADIO_TEMP_DIR", GRADIO_DIR)
atexit.register(shutil.rmtree, GRADIO_DIR, ignore_errors=True)


# Test modules that start Ray in this process. Ray's driver keeps threads and sockets after ray.shutdown() (2.60:
# one thread more per init and shutdown, and a socket it opens again seconds later), which made a test counting
# this process's descriptors fail once (a socket opened between its two counts): these modules run last.
RAY_MODULES = ("test_batch_ray",)


def pytest_collection_modifyitems(config, items) -> None:
    """Run the tests that start Ray after every other one (a stable sort: the rest keep their order)."""
    items.sort(key=lambda item: Path(str(item.fspath)).stem in RAY_MODULES)


@pytest.fixture(scope="session", autouse=True)
def private_temp_dir(tmp_path_factory) -> Path:
    """This process's temp dir, under pytest's own (which pytest prunes): gradio_client leaves an empty
    <40 hex> folder in the temp dir per file it downloads, some 240 per run. Child processes keep theirs."""
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tmp"))
    yield Path(tempfile.tempdir)
    tempfile.tempdir = saved


@pytest.fixture(scope="module", autouse=True)
def networks_released_after_each_module():
    """The shared engine's networks go after each test module: every module's own weights, options and shapes left
    loaded took the suite's process to 19 GB of a 24-GB machine's memory."""
    yield
    from lipsync.engine import DEFAULT_ENGINE

    DEFAULT_ENGINE.release()


@pytest.fixture(scope="session", autouse=True)
def isolated_weights(tmp_path_factory) -> Path:
    """$LIPSYNC_MODELS with a random wav2lip_hq; a planted S3FD beside it; cache and hub offline in tmp.

    The S3FD file is not named s3fd.pth: that name has a published sha256, which random weights fail.
    """
    base = tmp_path_factory.mktemp("weights")
    models = base / "models"
    models.mkdir()
    os.environ["LIPSYNC_MODELS"] = str(models)
    os.environ["LIPSYNC_CACHE"] = str(base / "cache")
    os.environ["HF_HOME"] = str(base / "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    # S3FD: every anchor a face (deterministic detection), saved as the published s3fd .pth is.
    testing.save_random_weights(models, s3fd_path=base / "planted_s3fd.pth", write_s3fd=_save_torch_legacy)
    return models


@pytest.fixture(scope="session")
def s3fd_weights(isolated_weights) -> Path:
    return isolated_weights.parent / "planted_s3fd.pth"


def _save_torch_legacy(state: dict, path: Path) -> None:
    """As the published s3fd .pth: a bare state_dict in torch's legacy (pre-1.6) format."""
    from torchfile_writer import save_torch, torch_names

    save_torch(torch_names(state), path, legacy=True)


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """scikit-image's public-domain astronaut photo (Eileen Collins), 512×512, as a BGR frame."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., ::-1])


@pytest.fixture(scope="session")
def media(tmp_path_factory, astronaut_bgr) -> dict:
    """A photo, espeak-ng speech, and a short video of the photo drifting sideways."""
    import cv2

    folder = tmp_path_factory.mktemp("media")
    photo = folder / "astronaut.png"
    cv2.imwrite(str(photo), astronaut_bgr)
    speech = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), SPEECH_TEXT], check=True, capture_output=True)
    clip = folder / "clip.mp4"
    _write_drifting_clip(astronaut_bgr, clip)
    return {"photo": photo, "speech": speech, "video": clip}


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict:
    """Small ffmpeg test-source clips for the readers' and writers' tests (tests/media_helpers.py)."""
    from media_helpers import make_clips

    return make_clips(tmp_path_factory.mktemp("clips"))


def _write_drifting_clip(image: np.ndarray, path: Path) -> None:
    """An H.264 clip of the photo moving a few pixels per frame (a face that moves), no audio."""
    h, w = image.shape[:2]
    ffmpeg = ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
              "-s", f"{w}x{h}", "-r", str(VIDEO_FPS), "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p",
              "-y", f"file:{path}"]  # fmt: skip
    proc = subprocess.Popen(ffmpeg, stdin=subprocess.PIPE)
    for i in range(VIDEO_FPS * VIDEO_SECONDS):
        shift = np.float32([[1, 0, (i % 10) - 5], [0, 1, 0]])
        proc.stdin.write(cv2_warp(image, shift).tobytes())
    proc.stdin.close()
    assert proc.wait() == 0


def write_pcm16_wav(path: Path, samples: np.ndarray, rate: int, channels: int) -> Path:
    """`samples` (interleaved, clipped to 16 bits) as a 16-bit PCM WAV at `rate` Hz with `channels` channels."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())
    return path


def quadrants(height: int = 48, width: int = 64) -> np.ndarray:
    """A picture of four distinct quadrants (one per colour channel, and grey), so that turns, flips and
    swapped channel orders show."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, : width // 2] = (255, 0, 0)
    image[: height // 2, width // 2 :] = (0, 255, 0)
    image[height // 2 :, : width // 2] = (0, 0, 255)
    image[height // 2 :, width // 2 :] = (200, 200, 200)
    return image


def cv2_warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def ffprobe(path: Path) -> dict:
    import json

    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", f"file:{path}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def heic_copy(photo: Path, folder: Path) -> Path:
    """The photo saved as an iPhone names its photos (IMG_0001.HEIC), by pillow-heif, which lipsync loads on need."""
    from PIL import Image

    from lipsync import picture

    picture.register_plugins()
    heic = folder / "IMG_0001.HEIC"
    Image.open(photo).save(heic, quality=90)
    return heic


def media_seconds(path: Path) -> float:
    """A media file's duration as its container states it (ffprobe)."""
    return float(ffprobe(path)["format"]["duration"])


def speech_seconds(path: Path) -> float:
    """How long `path`'s audio lasts once lipsync has decoded it (16 kHz mono)."""
    return len(audio.load_audio(path)) / audio.SAMPLE_RATE


def speech_frames(path: Path, fps: float) -> int:
    """The output frames a run makes for `path`'s speech at `fps`: one per mel window."""
    return audio.frame_count(audio.melspectrogram(audio.load_audio(path)).shape[1], fps)


def read_video_frames(path: Path) -> np.ndarray:
    """All frames of a (short) video as N×H×W×3 BGR, for checking results."""
    info = ffprobe(path)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    w, h = int(video["width"]), int(video["height"])
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", f"file:{path}", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def x264_options(path: Path) -> str:
    """The settings x264 wrote into the stream it made (its SEI: "x264 - core … options: …")."""
    data = path.read_bytes()
    start = data.index(b"options: ")
    return data[start : data.index(b"\0", start)].decode()


def free_port() -> int:
    """A local port nothing listens on (bound, then released): connections to it are refused at once."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refused_proxy() -> str:
    """A proxy nothing listens at: edge-tts fails at once through it, as offline."""
    return f"http://127.0.0.1:{free_port()}"
