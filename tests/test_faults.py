"""Faults outside the input: ffmpeg missing, the GPU running out of memory (downloads: tests/test_weights.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
from conftest import ROOT, ffprobe, write_pcm16_wav
from engine_helpers import WrappedPredictor, WrappingEngine
from media_helpers import eventually, no_garbage_collection, open_fds

import lipsync
from lipsync import batching, runtime
from lipsync.engine import S3FD_SPECS, Engine
from lipsync.errors import LipSyncError
from lipsync.options import LipSyncOptions

HAAR = LipSyncOptions(face_detector="haar", device="cpu")
NO_FFMPEG = "ffmpeg was not found: install ffmpeg"
# A thread an earlier test left (a server, Ray's client) may hold a descriptor for a moment; a leaked one stays
SETTLE_S = 2.0


def test_without_ffmpeg_the_command_line_says_so_at_once(media, tmp_path):
    env = dict(os.environ, PATH=str(tmp_path), PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))  # no ffmpeg on PATH
    args = ["--face", str(media["photo"]), "--audio", str(media["speech"]), "--outfile", str(tmp_path / "o.mp4")]
    proc = subprocess.run([sys.executable, "-m", "lipsync", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {NO_FFMPEG}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.mp4").exists()


def test_without_ffmpeg_the_api_raises_before_any_work(media, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    seen: List[str] = []
    with pytest.raises(LipSyncError, match=NO_FFMPEG):
        lipsync.run(media["photo"], media["speech"], tmp_path / "o.mp4", HAAR, progress=lambda s, d, t: seen.append(s))
    assert seen == [], "no stage started"


class RunsOutOfMemory(WrappedPredictor):
    """A real predictor that, like a full GPU, fails every call larger than `fits` (paddle's words)."""

    def __init__(self, predictor: runtime.Predictor, fits: int):
        super().__init__(predictor)
        self.fits = fits

    def run(self, *arrays: np.ndarray) -> List[np.ndarray]:
        if len(arrays[0]) > self.fits:
            self.sizes.append(len(arrays[0]))
            raise RuntimeError("ResourceExhaustedError: Out of memory error on GPU 0. Cannot allocate 1.2GB memory")
        return super().run(*arrays)


class OnFullGpu(RunsOutOfMemory):
    """RunsOutOfMemory that says it is on a GPU, so a short batch is padded as on one (synth.generate)."""

    device = runtime.Device("gpu", "requested")


def full_gpu_engine(fits: int) -> WrappingEngine:
    """The engine with its generator on a GPU that fits only `fits` faces per batch."""
    return WrappingEngine(lambda predictor: OnFullGpu(predictor, fits))


@pytest.mark.parametrize("face", ["photo", "video"])  # a picture's generator is split in two: both halve
def test_out_of_memory_halves_the_batch_and_the_job_goes_on(media, tmp_path, face):
    engine = full_gpu_engine(fits=4)
    out = tmp_path / "out.mp4"
    result = lipsync.run(media[face], media["speech"], out, HAAR, engine=engine)
    sizes = engine.generators[0].sizes
    assert sizes[:3] == [16, 8, 4], "16 failed, 8 failed, 4 fit"
    assert set(sizes[3:]) == {4}, "and the job went on at 4"
    assert result.frames > 4 * 10 and {s["codec_type"] for s in ffprobe(out)["streams"]} == {"video", "audio"}


def test_the_detector_halves_its_batch_too(s3fd_weights, tmp_path):
    """S3FD on a full GPU: a batch that does not fit is split, and the boxes are the same."""
    from lipsync import faces, s3fd

    prefix = runtime.export_static(lambda: s3fd.load_s3fd(s3fd_weights), S3FD_SPECS, tmp_path / "s3fd")
    failing = RunsOutOfMemory(runtime.Predictor(prefix, runtime.Device("cpu", "requested")), fits=1)
    frames = [np.full((96, 96, 3), 120 + 10 * i, np.uint8) for i in range(4)]
    expected = faces.S3FDDetector(failing.predictor.run)(frames)
    assert faces.S3FDDetector(batching.BatchRunner(failing.run, 4))(frames) == expected
    assert failing.sizes[:3] == [4, 2, 1] and set(failing.sizes[3:]) == {1}


class CrashesAfter(WrappedPredictor):
    """A real generator predictor that fails on its `good + 1`-th call, like a driver fault mid-job."""

    def __init__(self, predictor: runtime.Predictor, good: int):
        super().__init__(predictor)
        self.good = good

    def run(self, *arrays: np.ndarray) -> List[np.ndarray]:
        if self.good == 0:
            raise RuntimeError("the generator crashed")
        self.good -= 1
        return super().run(*arrays)


def _children() -> List[str]:
    """Child pids of every thread of this process; a thread that ends while we look has none."""
    pids: List[str] = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += (task / "children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended between listing and reading
            continue
    return pids


def test_a_job_that_fails_midway_stops_ffmpeg_and_closes_files_without_the_garbage_collector(media, tmp_path):
    """Reader (pass 2 reads the video again) and writer are both open when the generator fails: they must be
    closed at once, not when Python collects the generators (a server would pile up ffmpeg processes)."""
    options = LipSyncOptions(face_detector="haar", device="cpu", wav2lip_batch_size=4)
    short = tmp_path / "short.wav"  # shorter than the 2-s clip: pass 2 reads the video again through ffmpeg
    subprocess.run(["espeak-ng", "-w", str(short), "Hello."], check=True, capture_output=True)
    engine = WrappingEngine(lambda predictor: CrashesAfter(predictor, good=1))
    lipsync.run(media["video"], short, tmp_path / "warm.mp4", options, engine=Engine())  # warm caches
    fds, children = open_fds(), _children()
    with no_garbage_collection():
        with pytest.raises(RuntimeError, match="the generator crashed") as caught:
            lipsync.run(media["video"], short, tmp_path / "o.mp4", options, engine=engine)
        # the error is still held (as a server's error handler or log may hold it), and with it every frame
        # of its traceback: closing must not wait for those to go
        assert caught.traceback and _children() == children, "an ffmpeg process outlived the failed job"
        closed = eventually(lambda: not open_fds() - fds, SETTLE_S)
        assert closed, f"a pipe or temporary file outlived the failed job: {sorted(open_fds() - fds)}"
    assert not (tmp_path / "o.mp4").exists() and not list(tmp_path.glob(".o.mp4*")), "no partial output"


def _command_line(face: Path, speech: Path, outfile: Path) -> List[str]:
    return [sys.executable, "-m", "lipsync", "--face", str(face), "--audio", str(speech), "--outfile", str(outfile),
            "--box", "130", "330", "170", "360", "--face_detector", "haar", "--device", "cpu"]  # fmt: skip


def test_sigterm_ends_a_command_line_run_as_ctrl_c_does(media, tmp_path):
    """`timeout`, a container stopping: SIGTERM mid-run removes the run's temp folder and stops its ffmpeg (the
    default action left both behind), and the command says so and exits 143, as a shell reports SIGTERM."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(scratch))
    warm = subprocess.run(_command_line(media["photo"], media["speech"], tmp_path / "warm.mp4"), env=env,
                          capture_output=True, text=True, check=False)  # exports the networks, if not yet  # fmt: skip
    assert warm.returncode == 0, warm.stderr[-2000:]
    noise = np.random.default_rng(0).normal(0, 3000, 16000 * 60)  # a minute: far longer than the wait below
    long_speech = write_pcm16_wav(tmp_path / "long.wav", noise, 16000, 1)
    outfile = tmp_path / "stopped.mp4"
    process = subprocess.Popen(_command_line(media["photo"], long_speech, outfile), env=env,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    assert eventually(lambda: any(scratch.glob("lipsync-*")), timeout_s=60)  # the run has its temp folder
    assert eventually(lambda: _ffmpeg_writing(outfile), timeout_s=60)  # and is encoding
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and err.strip().splitlines()[-1] == "terminated", err[-2000:]
    assert not list(scratch.iterdir()) and not _ffmpeg_writing(outfile)
    assert not outfile.exists() and not list(tmp_path.glob(f".{outfile.name}.*"))  # nor its partial file


def _ffmpeg_writing(outfile: Path) -> bool:
    """Whether an ffmpeg process names `outfile` (its partial output) on its command line."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if words and words[0].endswith(b"ffmpeg") and any(str(outfile.name).encode() in word for word in words):
            return True
    return False
