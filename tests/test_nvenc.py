"""NVENC for a video's H.264 on a GPU (lipsync.nvenc): which jobs get it, and that its options are this ffmpeg's.

No GPU here: a machine without NVENC must keep x264 and say why, and the options a GPU job would give NVENC must be
ones this ffmpeg accepts (an option it refused would fail every video on the GPU Space, where this cannot be run)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import List

import numpy as np
import pytest
from conftest import x264_options
from media_helpers import ffmpeg_children

import lipsync
from lipsync import doctor, encoding, ffmpeg, nvenc, pipeline
from lipsync.device import Device
from lipsync.encoding import VideoWriter, write_args
from lipsync.errors import LipSyncError
from lipsync.options import LipSyncOptions
from lipsync.types import STAGE_FACES, STAGE_SYNC

# what ffmpeg says when it has h264_nvenc but the machine lacks the driver's libraries (no GPU, or a container
# without video capabilities): the options were all accepted, since ffmpeg sets them before it loads the libraries
LIBRARY_MISSING = ("libcuda", "libnvidia-encode", "No capable devices found", "no NVENC capable devices found")
OPTION_REFUSED = ("Unrecognized option", "Error setting option", "Unable to parse option", "Option not found")
FRAME = (320, 256)  # width, height: within NVENC's sides


def has_nvenc_encoder() -> bool:
    listed = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return nvenc.CODEC in listed


needs_nvenc_build = pytest.mark.skipif(not has_nvenc_encoder(), reason="this ffmpeg is built without h264_nvenc")


TRIED = nvenc._tried  # the process's one test encode (a test may put another verdict in its place)


@pytest.fixture(autouse=True)
def fresh_verdict(monkeypatch: pytest.MonkeyPatch):
    """Each test starts from a process that has not tried NVENC, nor given it up (nor do later tests see it)."""
    monkeypatch.delenv(nvenc.SWITCH, raising=False)
    monkeypatch.setattr(nvenc, "_given_up", [])
    TRIED.cache_clear()
    yield
    TRIED.cache_clear()


def write_frames(out: Path, audio: Path, tmp: Path, segments: List[Path] | None) -> None:
    """A GPU video job's writer: NVENC, the speech, and (given a list) the page's segments from the same encode."""
    sink = None if segments is None else segments.append
    with VideoWriter(out, size=FRAME, fps=25, audio=audio, temp_dir=tmp, segments=sink, gpu_encoder=True) as writer:
        for index in range(30):
            frame = np.zeros((FRAME[1], FRAME[0], 3), np.uint8)
            frame[:, : index * 8] = (40, 160, 220)
            writer.write(frame)


@needs_nvenc_build
@pytest.mark.parametrize("streamed", [False, True], ids=["mp4", "mp4+segments"])
def test_a_gpu_job_s_nvenc_options_are_accepted_by_this_ffmpeg(clips: dict, tmp_path: Path, streamed: bool) -> None:
    out, segments = tmp_path / "out.mp4", ([] if streamed else None)
    if nvenc.verdict().usable:  # a machine with NVENC: the job's file is NVENC's H.264
        write_frames(out, clips["audio"], tmp_path, segments)
        assert out.is_file() and (not streamed or segments)
        return
    with pytest.raises(LipSyncError) as failed:
        write_frames(out, clips["audio"], tmp_path, segments)
    said = str(failed.value)
    assert any(cause in said for cause in LIBRARY_MISSING), said
    assert not any(refused in said for refused in OPTION_REFUSED), said
    assert not out.exists()


@needs_nvenc_build
def test_the_check_above_tells_a_refused_option_from_a_missing_library(clips: dict, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvenc, "PRESET", "p9")  # NVENC's presets end at p7
    with pytest.raises(LipSyncError) as failed:
        write_frames(tmp_path / "out.mp4", clips["audio"], tmp_path, None)
    assert any(refused in str(failed.value) for refused in OPTION_REFUSED), str(failed.value)


@needs_nvenc_build
def test_without_nvenc_the_test_encode_says_why_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = []
    real_run = ffmpeg.run
    monkeypatch.setattr(ffmpeg, "run", lambda args, **kw: runs.append(args) or real_run(args, **kw))
    found = nvenc.verdict()
    if found.usable:
        pytest.skip("this machine has NVENC")
    assert any(cause in found.reason for cause in LIBRARY_MISSING), found.reason
    assert nvenc.verdict() is found and len(runs) == 1, "tried once per process"
    assert nvenc.CODEC in runs[0] and "-forced-idr" in runs[0], "the test encode uses the job's own options"
    assert not nvenc.chosen(True, False, (1280, 720)), "x264 encodes when NVENC cannot"
    assert found.reason in nvenc.describe(on_gpu=True) and found.reason in nvenc.why_not((1280, 720))


def test_a_cpu_job_never_tries_nvenc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ffmpeg, "run", lambda *a, **k: pytest.fail("no test encode for a CPU job"))
    assert not nvenc.chosen(False, False, (1280, 720))
    assert "x264" in nvenc.describe(on_gpu=False)
    assert pipeline._encoder(job_of((1280, 720), still=False), Device("cpu", "requested")).gpu is False


def test_lipsync_nvenc_0_keeps_x264_without_trying(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(nvenc.SWITCH, "0")
    monkeypatch.setattr(ffmpeg, "run", lambda *a, **k: pytest.fail("switched off: no test encode"))
    assert nvenc.verdict() == nvenc.Verdict(False, f"{nvenc.SWITCH}=0")
    assert not nvenc.chosen(True, False, (1280, 720))


class FakeJob:
    def __init__(self, size: tuple, still: bool) -> None:
        self.size, self.still = size, still


def job_of(size: tuple, still: bool) -> "pipeline.Job":
    return FakeJob(size, still)  # type: ignore[return-value]


@pytest.mark.parametrize("size, still, expected", [
    ((1280, 720), False, True),
    ((3840, 2160), False, True),
    ((1280, 720), True, False),  # a still: only its mouth's part is encoded, x264 on one core keeps up
    ((200, 720), False, False),  # below NVENC's sides: x264 is cheap there
    ((5000, 720), False, False),  # beyond NVENC's H.264 (4096 a side)
])  # fmt: skip
def test_which_gpu_jobs_nvenc_encodes_where_it_works(monkeypatch: pytest.MonkeyPatch, size: tuple, still: bool,
                                                     expected: bool) -> None:  # fmt: skip
    monkeypatch.setattr(nvenc, "verdict", lambda: nvenc.Verdict(True, "h264_nvenc encodes here"))
    assert nvenc.chosen(True, still, size) is expected
    if not still and not expected:
        assert f"{size[0]}×{size[1]}" in nvenc.why_not(size)
    encoder = pipeline._encoder(job_of(size, still), Device("gpu", "requested"))
    assert encoder == encoding.Encoder(threads=0, gpu=expected)


def test_nvenc_replaces_x264_s_options_and_forces_idr_keyframes_only_for_segments(tmp_path: Path) -> None:
    plain = write_args(tmp_path / "a.mp4", width=1280, height=720, fps=25, gpu_encoder=True)
    streamed = write_args(tmp_path / "a.mp4", width=1280, height=720, fps=25, gpu_encoder=True,
                          segments_folder=tmp_path)
    for args in (plain, streamed):
        assert args[args.index("-c:v") + 1] == nvenc.CODEC and "libx264" not in args and "-crf" not in args
        assert args[args.index("-cq") + 1] == str(nvenc.CQ) and args[args.index("-b:v") + 1] == "0"
        assert "bt709" in args, "colours tagged as with x264"
    assert "-forced-idr" not in plain and streamed[streamed.index("-forced-idr") + 1] == "1"
    webm = write_args(tmp_path / "a.webm", width=1280, height=720, fps=25, gpu_encoder=True)
    assert webm[webm.index("-c:v") + 1] == encoding.VP9_CODEC, "a .webm stays VP9"


def test_first_line_is_the_cause_without_its_prefix() -> None:
    said = (b"[h264_nvenc @ 0x55d3a6195c40] Cannot load libcuda.so.1\n"
            b"Error initializing output stream 0:0 -- Error while opening encoder\n")  # fmt: skip
    assert ffmpeg.first_line(said) == "Cannot load libcuda.so.1"
    assert ffmpeg.first_line("\n\n") == ffmpeg.NO_ERROR_TEXT


def test_the_doctor_names_the_video_encoder() -> None:
    line = doctor._encoder_line()
    assert line.label == "video encoder" and "x264" in line.text and not line.blocking


@pytest.mark.parametrize("streamed", [False, True], ids=["mp4", "mp4+segments"])
def test_a_gpu_video_job_hands_its_frames_to_the_encoder_nvenc_would_be(media: dict, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          streamed: bool) -> None:  # fmt: skip
    """The job's path from the choice to ffmpeg's arguments, run on this CPU: x264 stands in for NVENC (whose
    options the test above checks) with settings of its own, which the file then carries."""
    asked: List[bool] = []

    def stand_in(keyframes_forced: bool) -> List[str]:
        asked.append(keyframes_forced)
        return ["-c:v", "libx264", "-preset", "ultrafast", "-x264-params", "ref=2:subme=3", "-pix_fmt", "yuv420p"]

    monkeypatch.setattr(nvenc, "args", stand_in)
    monkeypatch.setattr(pipeline, "_encoder", lambda job, device: encoding.Encoder(threads=0, gpu=not job.still))
    segments: List[Path] = []
    out = tmp_path / "out.mp4"
    lipsync.run(media["video"], media["speech"], out, LipSyncOptions(face_detector="haar", device="cpu"),
                segments=segments.append if streamed else None)
    assert asked == [streamed], "the job's encoder options came from lipsync.nvenc, IDR keyframes for segments"
    assert "ref=2" in x264_options(out) and "subme=3" in x264_options(out)
    assert not streamed or len(segments) >= 2


def needs_failing_nvenc() -> None:
    """Skip on a machine whose NVENC works: the tests below need its encode to fail, as it does without a GPU."""
    if nvenc.verdict().usable:
        pytest.skip("this machine has NVENC")
    TRIED.cache_clear()


def test_a_failed_nvenc_encode_is_told_by_the_write_that_finds_it(clips: dict, tmp_path: Path) -> None:
    """Not at the end of the job: ffmpeg stops at the encoder's first frame, and a GPU job would draw all its
    frames for nothing (the retry below depends on it)."""
    needs_failing_nvenc()
    out, written = tmp_path / "out.mp4", []
    with pytest.raises(encoding.GpuEncoderFailed) as failed:
        with VideoWriter(out, size=FRAME, fps=25, audio=clips["audio"], temp_dir=tmp_path, gpu_encoder=True) as writer:
            for _ in range(200):
                writer.write(np.zeros((FRAME[1], FRAME[0], 3), np.uint8))
                written.append(1)
    assert len(written) < 200, "raised by a write, not by close"
    assert nvenc.CODEC in str(failed.value) and failed.value.reason in str(failed.value) and not failed.value.shown
    assert any(cause in failed.value.reason for cause in LIBRARY_MISSING), "the cause, ffmpeg's first line"
    assert not out.exists() and ffmpeg_children() == []


def test_a_failed_nvenc_encode_found_at_close_names_its_cause_too(clips: dict, tmp_path: Path) -> None:
    """A job so short that its frames all fit in ffmpeg's pipe learns of the failure only when it closes."""
    needs_failing_nvenc()
    writer = VideoWriter(tmp_path / "out.mp4", size=FRAME, fps=25, audio=clips["audio"], temp_dir=tmp_path,
                         gpu_encoder=True)  # fmt: skip
    writer.write(np.zeros((FRAME[1], FRAME[0], 3), np.uint8))  # 240 KB: the pipe takes it whatever ffmpeg does
    with pytest.raises(encoding.GpuEncoderFailed) as failed:
        writer.close()
    assert any(cause in failed.value.reason for cause in LIBRARY_MISSING), failed.value.reason
    assert ffmpeg_children() == [] and list(tmp_path.iterdir()) == []


def test_giving_nvenc_up_keeps_x264_for_the_rest_of_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvenc, "_tried", lambda: nvenc.Verdict(True, "h264_nvenc encodes here"))
    assert nvenc.chosen(True, False, (1280, 720))
    nvenc.give_up("OpenEncodeSessionEx failed: out of memory (10)")
    nvenc.give_up("a later failure")
    assert not nvenc.chosen(True, False, (1280, 720))
    reason = nvenc.verdict().reason
    assert reason == "h264_nvenc failed in a job: OpenEncodeSessionEx failed: out of memory (10)", "the first cause"
    assert reason in nvenc.describe(on_gpu=True) and reason in nvenc.why_not((1280, 720))


@pytest.mark.parametrize("streamed", [False, True], ids=["mp4", "mp4+segments"])
def test_a_gpu_job_whose_nvenc_fails_runs_again_with_x264(media: dict, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, streamed: bool) -> None:
    """The real NVENC options on this GPU-less machine fail as a GPU Space's would when its encoder sessions or
    memory are used up: the job stops at its first frames, runs again into x264, and says so."""
    needs_failing_nvenc()
    monkeypatch.setattr(nvenc, "_tried", lambda: nvenc.Verdict(True, "the test encode passed"))  # as on the Space
    monkeypatch.setattr(pipeline, "_encoder", lambda job, device: encoding.Encoder(
        threads=0, gpu=nvenc.chosen(True, job.still, job.size)))  # the job's choice, as if on a GPU
    reports: List[tuple] = []
    segments: List[Path] = []
    out = tmp_path / "out.mp4"
    result = lipsync.run(media["video"], media["speech"], out, LipSyncOptions(face_detector="haar", device="cpu"),
                         progress=lambda *step: reports.append(step), segments=segments.append if streamed else None)
    assert x264_options(out), "x264 made the file"
    cause = nvenc.verdict().reason.removeprefix(f"{nvenc.CODEC} failed in a job: ")
    assert cause and cause != ffmpeg.NO_ERROR_TEXT, "ffmpeg's first line: the cause"
    assert any("NVENC" in note and "x264" in note and cause in note for note in result.notes), result.notes
    faces = [i for i, (stage, done, _) in enumerate(reports) if stage == STAGE_FACES and done == 0]
    assert len(faces) == 2, "pass 1 ran again"
    synced = [done for stage, done, _ in reports[: faces[1]] if stage == STAGE_SYNC]
    assert max(synced, default=0) < result.frames, "the failed attempt stopped before drawing every frame"
    if streamed:
        names = [path.name for path in segments]
        assert len(names) >= 2 and names == sorted(set(names)), "the page got the second attempt's segments only"
    second = lipsync.run(media["video"], media["speech"], tmp_path / "again.mp4",
                         LipSyncOptions(face_detector="haar", device="cpu"))
    assert not any("NVENC" in note for note in second.notes), "the next job goes to x264 at once"


def test_an_nvenc_failure_after_segments_were_shown_is_an_error_to_run_again(media: dict, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The page played part of the video already: running it again would show it twice; NVENC is given up all
    the same, so running it again works."""

    def failing(*args: object) -> int:
        raise encoding.GpuEncoderFailed(tmp_path / "out.mp4", "GPU has fallen off the bus | Conversion failed!",
                                        "GPU has fallen off the bus", shown=True)

    monkeypatch.setattr(pipeline, "_passes", failing)
    with pytest.raises(LipSyncError, match="NVENC.*part-way.*fallen off the bus.*run this again"):
        lipsync.run(media["video"], media["speech"], tmp_path / "out.mp4",
                    LipSyncOptions(face_detector="haar", device="cpu"))
    assert not (tmp_path / "out.mp4").exists() and "fallen off the bus" in nvenc.verdict().reason
