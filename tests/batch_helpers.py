"""What tests/test_batch.py and tests/test_batch_ray.py share: small media, a six-row manifest, and checks of
a batch's videos and results.csv."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path
from typing import Dict, List

import numpy as np
from conftest import ffprobe

from lipsync import audio, tts
from lipsync.batch import DONE, FAILED, ResultRow

SIDE = 192  # px: small frames keep every job a few seconds long on a CPU
SPEECH = "Hello there."
TYPED = "Good morning."
PER_ROW_FPS = 10  # the per-row option's row: a picture rendered at 10 fps instead of 25
LENGTH_TOLERANCE_S = 2 / PER_ROW_FPS + 0.07
CLOSED_PORT_PROXY = "http://127.0.0.1:9"  # edge-tts (trust_env) fails at once: the typed row speaks with espeak-ng


def make_media(folder: Path, astronaut_bgr: np.ndarray) -> Dict[str, Path]:
    """A small photo, a second (smaller) photo, ~1 s of espeak-ng speech, a 1-s video, and a broken 'picture'."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    small = cv2.resize(astronaut_bgr, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    photo, photo2 = folder / "astronaut.png", folder / "astronaut-small.jpg"
    cv2.imwrite(str(photo), small)
    cv2.imwrite(str(photo2), cv2.resize(astronaut_bgr, (SIDE - 32, SIDE - 32), interpolation=cv2.INTER_AREA))
    speech = folder / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), SPEECH], check=True, capture_output=True)
    clip = folder / "clip.mp4"
    _clip(small, clip)
    broken = folder / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 10)
    return {"photo": photo, "photo2": photo2, "speech": speech, "video": clip, "broken": broken}


def _clip(image: np.ndarray, path: Path, frames: int = 25) -> None:
    size = f"{image.shape[1]}x{image.shape[0]}"
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", size,
               "-r", "25", "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-y", f"file:{path}"]  # fmt: skip
    raw = b"".join(np.roll(image, i % 5, axis=1).tobytes() for i in range(frames))
    subprocess.run(command, input=raw, check=True)


def write_manifest(folder: Path, media: Dict[str, Path]) -> Path:
    """Seven rows, paths relative to the manifest: picture+audio, typed text, video, a broken face, a per-row option
    (fps), a second picture with an outfile in a subfolder (a .webm), and a missing audio file."""
    rel = {key: os.path.relpath(path, folder) for key, path in media.items()}
    rows = [
        {"face": rel["photo"], "audio": rel["speech"]},
        {"face": rel["photo"], "text": TYPED, "voice": "en-GB-SoniaNeural", "outfile": "typed.mp4"},
        {"face": rel["video"], "audio": rel["speech"]},
        {"face": rel["broken"], "audio": rel["speech"], "outfile": "broken.mp4"},
        {"face": rel["photo"], "audio": rel["speech"], "outfile": "slow.mp4", "fps": str(PER_ROW_FPS)},
        {"face": rel["photo2"], "audio": rel["speech"], "outfile": "sub/second.webm", "pads": "0 12 0 0"},
        {"face": rel["photo"], "audio": "nowhere.wav"},
    ]
    manifest = folder / "jobs.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["face", "audio", "text", "voice", "outfile", "fps", "pads"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def typed_speech_seconds(folder: Path) -> float:
    """How long the typed row's speech lasts: espeak-ng speaks it as lipsync.tts does offline."""
    speech = tts.espeak_speak(TYPED, "en-GB-SoniaNeural", 0, folder)
    return seconds_of(speech.path)


def seconds_of(path: Path) -> float:
    return len(audio.load_audio(path)) / audio.SAMPLE_RATE


def check_batch(rows: List[ResultRow], outdir: Path, media: Dict[str, Path], typed_seconds: float) -> None:
    """Five rows done with correct videos, the broken face and the missing audio failed with their reasons,
    results.csv says the same."""
    by_row = {row.row: row for row in rows}
    assert [row.row for row in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert by_row[4].status == FAILED and "broken.png" in by_row[4].error, by_row[4]
    assert by_row[7].status == FAILED and "not found" in by_row[7].error and "nowhere.wav" in by_row[7].error
    assert not (outdir / "broken.mp4").exists()
    speech = seconds_of(media["speech"])
    expected = {1: speech, 2: typed_seconds, 3: speech, 5: speech, 6: speech}
    for number, seconds in expected.items():
        row = by_row[number]
        assert row.status == DONE, row
        assert row.frames > 0 and row.device.startswith("cpu") and row.attempts == 1
        check_video(Path(row.outfile), seconds, fps=PER_ROW_FPS if number == 5 else 25)
    assert Path(by_row[6].outfile) == outdir / "sub" / "second.webm"
    assert Path(by_row[1].outfile).parent == outdir and Path(by_row[1].outfile).name == "astronaut-hello.mp4"
    listed = read_csv(outdir / "results.csv")
    assert [r["status"] for r in listed] == ["done", "done", "done", "failed", "done", "done", "failed"]
    assert listed[3]["error"] == by_row[4].error and listed[1]["outfile"] == str(outdir / "typed.mp4")
    assert not list(outdir.rglob("*.part")), "no partial files are left"


def check_video(path: Path, seconds: float, fps: int) -> None:
    """H.264 yuv420p + AAC (VP9 + Opus for a .webm), at `fps`, lasting as long as its speech."""
    info = ffprobe(path)
    streams = {s["codec_type"]: s for s in info["streams"]}
    codecs = ("vp9", "opus") if path.suffix == ".webm" else ("h264", "aac")
    assert (streams["video"]["codec_name"], streams["audio"]["codec_name"]) == codecs, path
    assert streams["video"]["pix_fmt"] == "yuv420p"
    num, den = (int(x) for x in streams["video"]["r_frame_rate"].split("/"))
    assert abs(num / den - fps) < 0.01
    assert abs(float(info["format"]["duration"]) - seconds) <= LENGTH_TOLERANCE_S, (path, seconds)


def read_csv(path: Path) -> List[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
