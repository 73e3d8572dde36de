"""lipsync.segments: the writer's frames handed over in one-second MPEG-TS segments while it runs, cut from the
mp4's own encode."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import read_video_frames
from media_helpers import ffmpeg, ffmpeg_children, no_garbage_collection, open_fds
from test_encoding import colour_frame

from lipsync import segments
from lipsync.errors import LipSyncError
from lipsync.encoding import VideoWriter

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")

FPS = 25
SECONDS = 3.4  # three whole segments and a short last one
WHILE_WRITING = 2  # segments out once 3.2 s of frames are in: each once x264's lookahead (~13 frames) has passed it
SIZE = (321, 241)  # odd: the writer pads it
AWKWARD = "a|b [c]:d 'e' \\f 100%d"  # what means something to ffmpeg (its tee's escapes; % to the segment muxer)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "tone.wav"
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=16000:duration={SECONDS}", path)
    return path


def probe(path: Path, *entries: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-show_format", *entries,
                          f"file:{path}"], capture_output=True, check=True).stdout  # fmt: skip
    return json.loads(out)


def keyframe_times(path: Path) -> list:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-skip_frame", "nokey", "-show_entries",
                          "frame=pts_time", "-of", "default=nw=1:nk=1", f"file:{path}"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return [round(float(t), 2) for t in out.split() if t != "N/A"]


def decoded_frames(path: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", f"file:{path}"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return int(out.split()[0])  # mpegts lists its streams twice (programs, then streams)


def write(out: Path, audio: Path, temp: Path, sink=None, frames: int = round(SECONDS * FPS), pause_at: int = -1):
    """Write `frames` frames; at frame `pause_at`, wait until the sink got WHILE_WRITING segments (it must)."""
    temp.mkdir(parents=True, exist_ok=True)
    with VideoWriter(out, size=SIZE, fps=FPS, audio=audio, temp_dir=temp, segments=sink) as writer:
        for index in range(frames):
            if index == pause_at:
                deadline = time.monotonic() + 30
                while len(sink.got) < WHILE_WRITING and time.monotonic() < deadline:
                    time.sleep(0.02)
                sink.before_close = len(sink.got)
            writer.write(colour_frame(index % 26))


class Sink:
    """Takes each segment into its own folder, as the app does, noting the thread it came on."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.got, self.threads, self.before_close = folder, [], set(), 0
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, segment: Path) -> None:
        self.threads.add(threading.current_thread().name)
        self.got.append(Path(shutil.move(str(segment), self.folder / segment.name)))


def test_segments_come_while_encoding_each_playable_alone_with_the_mp4s_very_frames(speech, tmp_path):
    plain, streamed = tmp_path / "plain.mp4", tmp_path / AWKWARD / "streamed.mp4"
    write(plain, speech, tmp_path / "t1")
    sink = Sink(tmp_path / "got")
    write(streamed, speech, tmp_path / AWKWARD / "t2", sink, pause_at=round(3.2 * FPS))
    assert keyframe_times(plain) == [0.0], "without segments the mp4 keeps its long GOP"
    assert keyframe_times(streamed) == [float(s) for s in range(int(SECONDS) + 1)], "a keyframe every second"
    shown = np.concatenate([read_video_frames(segment) for segment in sink.got])  # each segment decoded alone
    assert len(shown) == round(SECONDS * FPS) and np.array_equal(shown, read_video_frames(streamed)), "one encode"
    data = streamed.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "the mp4 still starts playing before it is all downloaded"

    assert sink.before_close >= WHILE_WRITING, "segments come while frames are still written"
    assert "lipsync-segments" in sink.threads
    assert [p.name for p in sink.got] == [segments.SEGMENT_NAME.format(i) for i in range(int(SECONDS) + 1)]
    durations = []
    for segment in sink.got:
        info = probe(segment)
        assert info["format"]["format_name"] == "mpegts"
        codecs = sorted(s["codec_name"] for s in info["streams"])
        assert codecs == ["aac", "h264"], (segment.name, codecs)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert (video["width"], video["height"], video["pix_fmt"]) == (322, 242, "yuv420p")
        assert keyframe_times(segment)[0] == pytest.approx(float(video["start_time"]), abs=0.01), "starts on one"
        durations.append(decoded_frames(segment) / FPS)  # decoded alone: it carries its own headers
    assert durations[:-1] == [1.0] * int(SECONDS)
    assert sum(durations) == pytest.approx(SECONDS, abs=1 / FPS)
    assert not list((tmp_path / AWKWARD / "t2").iterdir()), "every segment handed over, their folder gone"


def test_a_sink_that_fails_fails_the_writer_and_an_abort_stops_the_watcher(speech, tmp_path):
    def refuse(segment: Path) -> None:
        raise OSError("disk full")

    out = tmp_path / "out.mp4"
    with pytest.raises(OSError, match="disk full"):
        write(out, speech, tmp_path / "t1", refuse)
    assert not out.exists() and not list(tmp_path.glob(".out.mp4*")), "no mp4, no partial file"

    with no_garbage_collection():
        before, threads = open_fds(), threading.active_count()
        sink = Sink(tmp_path / "got")
        writer = VideoWriter(out, size=SIZE, fps=FPS, audio=speech, temp_dir=tmp_path / "t1", segments=sink)
        for index in range(FPS):
            writer.write(colour_frame(index % 26))
        writer.abort()
        assert threading.active_count() == threads and ffmpeg_children() == [] and open_fds() == before
    assert not out.exists() and not list((tmp_path / "t1").iterdir())


def test_segments_come_from_the_mp4s_one_encode_and_a_run_with_no_frames_hands_over_none(speech, tmp_path):
    from lipsync.containers import MP4
    from lipsync.encoding import write_args

    plain = write_args(tmp_path / "o.mp4", width=64, height=48, fps=FPS, audio=speech, audio_duration=SECONDS)
    assert plain[-4:] == ["+faststart", "-f", "mp4", f"file:{tmp_path / 'o.mp4'}"] and "segment" not in plain
    segmented = write_args(tmp_path / "o.mp4", width=64, height=48, fps=FPS, audio=speech, audio_duration=SECONDS,
                      segments_folder=tmp_path / "s")  # fmt: skip
    assert segmented[: len(plain) - 5] == plain[:-5], "the same frames, audio and codecs as the mp4's"
    assert segmented[len(plain) - 5 :] == segments.tee_args(tmp_path / "o.mp4", MP4.muxer, tmp_path / "s")
    assert segmented.count("-c:v") == 1 and segmented.count("-f") == plain.count("-f"), "one encode, one output"
    (tmp_path / "t").mkdir()
    with pytest.raises(LipSyncError, match="no frames were written"):
        with VideoWriter(tmp_path / "none.mp4", size=(64, 48), fps=FPS, audio=speech, temp_dir=tmp_path / "t",
                         segments=Sink(tmp_path / "got")):  # fmt: skip
            pass
    assert not list((tmp_path / "got").iterdir()) and not list((tmp_path / "t").iterdir())
