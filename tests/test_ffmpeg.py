"""Tests for lipsync.ffmpeg: shared argument pieces, the one "not found" error, and processes that end cleanly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from media_helpers import ffmpeg_children, no_garbage_collection, open_fds

from lipsync import audio, encoding, ffmpeg, video
from lipsync.errors import LipSyncError

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")

NOT_FOUND = "ffmpeg was not found: install ffmpeg (e.g. `apt install ffmpeg`) and make sure ffmpeg and ffprobe are on PATH"
ENDLESS_VIDEO = [*ffmpeg.head(), "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "rawvideo", "pipe:1"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "talk.mp4"
    subprocess.run([*ffmpeg.head(), "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-f", "lavfi", "-i",
                    "sine=sample_rate=16000", "-t", "1", "-c:v", "libx264", "-c:a", "aac", str(path)], check=True)
    return path


def test_argument_pieces() -> None:
    assert ffmpeg.head() == ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]
    assert ffmpeg.file_arg(Path("-a:b.mp4")) == "file:-a:b.mp4"
    assert [ffmpeg.rate_arg(fps) for fps in (25.0, 30000 / 1001, 12.5)] == ["25", "30000/1001", "25/2"]
    assert ffmpeg.probe_args("x.mp4")[0] == "ffprobe" and ffmpeg.probe_args("x.mp4")[-1] == "file:x.mp4"
    assert audio.decode_args("-v.wav")[:5] == ffmpeg.head() and "file:-v.wav" in audio.decode_args("-v.wav")
    assert video.read_args("v.mp4", 25)[:5] == ffmpeg.head()


def test_one_not_found_message_from_audio_and_video(clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = video.probe(clip)
    monkeypatch.setenv("PATH", str(tmp_path))
    failures = [lambda: audio.load_audio(clip), video.require_ffmpeg, lambda: next(video.read_frames(clip, info)),
                lambda: encoding.VideoWriter(tmp_path / "o.mp4", size=(64, 48), fps=25, audio=None, temp_dir=tmp_path)]
    for fail in failures:
        with pytest.raises(LipSyncError) as caught:
            fail()
        assert str(caught.value) == NOT_FOUND
    with pytest.raises(LipSyncError, match="^ffprobe was not found: install ffmpeg"):
        video.probe(clip)


def test_only_ffprobe_missing_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ffmpeg").symlink_to(shutil.which("ffmpeg"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LipSyncError, match="^ffprobe was not found: install ffmpeg"):
        video.require_ffmpeg()


def test_stop_kills_reaps_and_closes_everything() -> None:
    with no_garbage_collection():
        before = open_fds()
        process = ffmpeg.Process(ENDLESS_VIDEO, stdout=True)
        assert process.stdout is not None and len(process.stdout.read(1000)) == 1000
        assert ffmpeg_children() and not process.stopped
        process.stop()
        assert process.stopped and ffmpeg_children() == [] and open_fds() == before
        process.stop()  # idempotent
        assert process.said() == ffmpeg.NO_ERROR_TEXT


def test_stop_with_unflushed_input_still_closes(tmp_path: Path) -> None:
    args = [*ffmpeg.head(), "-f", "rawvideo", "-pix_fmt", "gray", "-video_size", "8x8", "-i", "pipe:0",
            "-f", "null", "-"]
    with no_garbage_collection():
        before = open_fds()
        with ffmpeg.Process(args, stdin=True, temp_dir=tmp_path) as process:
            assert process.stdin is not None
            process.stdin.write(bytes(10))  # buffered, never flushed before the kill
        assert ffmpeg_children() == [] and open_fds() == before and list(tmp_path.iterdir()) == []


def test_finish_and_said(tmp_path: Path) -> None:
    args = [*ffmpeg.head(), "-f", "rawvideo", "-pix_fmt", "gray", "-video_size", "8x8", "-i", "pipe:0",
            "-c:v", "no-such-codec", "-f", "null", "-"]
    with ffmpeg.Process(args, stdin=True) as process:
        assert process.finish() != 0
        assert "no-such-codec" in process.said()
    said = b"[mov,mp4 @ 0x55c52bf07180] moov atom not found\nfile:/a:b/x.mp4: Invalid data\n"
    assert ffmpeg.tail(said, "/a:b/x.mp4") == "moov atom not found | Invalid data"
    assert ffmpeg.tail(b"1\n2\n3\n4\n") == "2 | 3 | 4", "the last lines"


def test_run_captures_both_streams() -> None:
    result = ffmpeg.run([*ffmpeg.head(), "-f", "lavfi", "-i", "color=red:s=2x2", "-frames:v", "1",
                         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
    assert result.returncode == 0 and np.frombuffer(result.stdout, np.uint8).reshape(4, 3)[0, 0] > 200
    assert ffmpeg_children() == []


@pytest.mark.skipif(not hasattr(__import__("fcntl"), "F_GETPIPE_SZ"), reason="pipe sizes are Linux's")
def test_pipes_to_and_from_ffmpeg_are_widened(tmp_path):
    """Frames cross in pieces of the pipe's size: 64 KiB by default, 1 MiB here (a 720p frame in 3, not 43)."""
    import fcntl

    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray",
            "-video_size", "4x4", "-i", "pipe:0", "-f", "rawvideo", "pipe:1"]  # fmt: skip
    with ffmpeg.Process(args, stdin=True, stdout=True, temp_dir=tmp_path) as process:
        sizes = [fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) for pipe in (process.stdin, process.stdout)]
        process.stdin.write(bytes(range(16)))
        process.stdin.close()
        assert process.stdout.read() == bytes(range(16))
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) >= ffmpeg.PIPE_BYTES:  # else they keep the default
        assert sizes == [ffmpeg.PIPE_BYTES] * 2
