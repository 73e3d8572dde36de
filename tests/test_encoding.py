"""Tests for lipsync.encoding: the writer's ffmpeg arguments, its output, and that it leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import ffprobe, media_seconds, x264_options
from media_helpers import AUDIO_SECONDS, ODD_SIZE, ffmpeg_children, no_garbage_collection, open_fds

from lipsync.encoding import VideoWriter, encoder_threads, write_args
from lipsync.errors import LipSyncError
from lipsync.video import probe, read_frames


def test_write_args_even_size_audio_and_duration() -> None:
    args = write_args("out.mp4", width=321, height=241, fps=25, audio="voice.wav",
                      audio_duration=2.5, audio_sample_rate=96000)
    joined = " ".join(args)
    assert "-map 1:a:0" in joined and "-t 2.500000" in joined and "-ar 48000" in joined
    assert "pad=322:242" in args[args.index("-vf") + 1] and "tpad" in args[args.index("-vf") + 1]
    assert "libx264" in args and "yuv420p" in args and "+faststart" in args
    assert args[-1] == "file:out.mp4"
    even = write_args("out.mp4", width=320, height=240, fps=25, audio="voice.wav", audio_sample_rate=44100)
    assert "pad=" not in " ".join(even) and "-ar" not in even and "-t" not in even and "tpad" not in " ".join(even)
    assert "-ac" not in even, "mono and stereo stay as they are"
    surround = write_args("out.mp4", width=320, height=240, fps=25, audio="voice.wav", audio_channels=8)
    assert surround[surround.index("-ac") + 1] == "2", "7.1 is mixed down to stereo, which browsers play"
    silent = " ".join(write_args("out.mp4", width=320, height=240, fps=25))
    assert "1:a:0" not in silent and "-c:a" not in silent


def test_the_output_name_chooses_the_container_and_its_codecs() -> None:
    def args_for(name: str) -> list[str]:
        return write_args(name, width=320, height=240, fps=25, audio="voice.wav", audio_duration=2.0)

    def option(args: list[str], name: str) -> str:  # the output's: the last one given
        return args[len(args) - 1 - args[::-1].index(name) + 1]

    for name, muxer, video, sound in (("a.mp4", "mp4", "libx264", "aac"), ("b.MOV", "mov", "libx264", "aac"),
                                      ("c.mkv", "matroska", "libx264", "aac"),
                                      ("d.webm", "webm", "libvpx-vp9", "libopus")):  # fmt: skip
        args = args_for(name)
        assert (option(args, "-f"), option(args, "-c:v"), option(args, "-c:a")) == (muxer, video, sound), name
        assert ("+faststart" in args) == (muxer in ("mp4", "mov")), "the index first where the container has one"
        assert option(args, "-colorspace") == "bt709" and option(args, "-t") == "2.000000", name
    webm = args_for("d.webm")
    assert option(webm, "-b:v") == "0" and "-x264-params" not in webm and "-aac_coder" not in webm
    still = write_args("d.webm", width=320, height=240, fps=25, still=True)
    assert "-x264-params" not in still, "x264's options go to x264 only"
    with pytest.raises(LipSyncError, match=r"must be a \.mp4, \.mov, \.mkv or \.webm file \(got e.avi\)"):
        args_for("e.avi")
    with pytest.raises(ValueError, match="H.264 only"):
        write_args("d.webm", width=320, height=240, fps=25, segments_folder="segments")


@pytest.mark.parametrize("name, codecs", [("talk.webm", ("vp9", "opus")), ("talk.mov", ("h264", "aac")),
                                          ("talk.mkv", ("h264", "aac"))])  # fmt: skip
def test_each_container_plays_as_long_as_its_speech(clips: dict[str, Path], tmp_path: Path, name: str,
                                                    codecs: tuple[str, str]) -> None:  # fmt: skip
    out = tmp_path / name
    with VideoWriter(out, size=ODD_SIZE, fps=25, audio=clips["audio"], temp_dir=tmp_path,
                     pixel_aspect=Fraction(64, 45)) as writer:  # fmt: skip
        for index in range(20):  # 0.8 s of video for 1.0 s of audio
            writer.write(colour_frame(index))
    streams = {s["codec_type"]: s for s in ffprobe(out)["streams"]}
    video, audio = streams["video"], streams["audio"]
    assert (video["codec_name"], audio["codec_name"]) == codecs
    assert (video["width"], video["height"], video["pix_fmt"]) == (322, 242, "yuv420p")
    shown = Fraction(video["sample_aspect_ratio"].replace(":", "/"))  # Matroska stores the shown size in whole pixels
    assert abs(shown / Fraction(64, 45) - 1) < 1 / 322 and video.get("color_space") == "bt709"
    assert media_seconds(out) == pytest.approx(AUDIO_SECONDS, abs=1 / 25)
    counted = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                              "stream=nb_read_frames", "-of", "csv=p=0", out], capture_output=True, text=True)
    assert int(counted.stdout) == round(AUDIO_SECONDS * 25), "the last frame held to the speech's end"
    with read_frames(out, probe(out)) as frames:
        back = next(frames)
    for column, colour in ((50, (0, 0, 255)), (150, (0, 255, 0)), (250, (255, 0, 0))):
        assert np.abs(back[100:200, column].astype(int) - colour).max() <= 8, "colours survive encode + decode"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name], "no partial file left beside it"


def top_level_boxes(path: Path) -> list[str]:
    """Top-level mp4 box types in file order."""
    names, data, offset = [], path.read_bytes(), 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        names.append(data[offset + 4:offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        if size < 8:
            break
        offset += size
    return names


def colour_frame(index: int) -> np.ndarray:
    frame = np.zeros((241, 321, 3), np.uint8)
    frame[:, :100] = (0, 0, 255)
    frame[:, 100:200] = (0, 255, 0)
    frame[:, 200:] = (255, 0, 0)
    frame[:20] = index * 10  # a changing strip
    return frame


def test_writer_output(clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work, scratch = tmp_path / "cwd", tmp_path / "scratch"
    work.mkdir(), scratch.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "result.mp4"
    with VideoWriter(out, size=ODD_SIZE, fps=25, audio=clips["audio"], temp_dir=scratch) as writer:
        for index in range(20):  # 0.8 s of video for 1.0 s of audio
            writer.write(colour_frame(index))
    streams = {s["codec_type"]: s for s in ffprobe(out)["streams"]}
    video, audio = streams["video"], streams["audio"]
    assert (video["codec_name"], video["pix_fmt"], video["width"], video["height"]) == ("h264", "yuv420p", 322, 242)
    assert audio["codec_name"] == "aac" and audio["sample_rate"] == "44100"
    assert media_seconds(out) == pytest.approx(AUDIO_SECONDS, abs=1 / 25)
    assert float(video["duration"]) == pytest.approx(AUDIO_SECONDS, abs=1 / 25), "last frame held to the end"
    boxes = top_level_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat"), "faststart: moov first"
    with read_frames(out, probe(out)) as frames:
        back = next(frames)
    for column, colour in ((50, (0, 0, 255)), (150, (0, 255, 0)), (250, (255, 0, 0))):
        assert np.abs(back[100:200, column].astype(int) - colour).max() <= 6, "colours survive encode + decode"
    assert np.abs(back[100:200, 321].astype(int) - back[100:200, 320]).max() <= 6, "padding smears the edge"
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "result.mp4",
                                                                                          "scratch"]


def test_writer_cuts_frames_past_the_audio(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "long.mp4"
    with VideoWriter(out, size=(64, 48), fps=25, audio=clips["audio"], temp_dir=tmp_path) as writer:
        for _ in range(150):  # 6 s of frames for 1 s of audio
            writer.write(np.zeros((48, 64, 3), np.uint8))
    assert media_seconds(out) == pytest.approx(AUDIO_SECONDS, abs=1 / 25)


def test_writer_output_may_replace_its_audio_source(clips: dict[str, Path], tmp_path: Path) -> None:
    talk = tmp_path / "talk.mp4"
    shutil.copy(clips["with_audio"], talk)
    with VideoWriter(talk, size=(96, 64), fps=25, audio=talk, temp_dir=tmp_path) as writer:
        for _ in range(30):
            writer.write(np.full((64, 96, 3), 128, np.uint8))
    info = probe(talk)
    assert (info.width, info.height) == (96, 64) and info.has_audio
    assert info.duration == pytest.approx(1.5, abs=1 / 25)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4"]


def test_failed_ffmpeg_leaves_no_file(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "result.mp4"
    writer = VideoWriter(out, size=(64, 48), fps=25, audio=clips["audio"], temp_dir=tmp_path,
                         preset="no-such-preset")
    for _ in range(10):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(LipSyncError, match="(?i)preset"):
        writer.close()
    assert list(out.parent.iterdir()) == [] and ffmpeg_children() == []


def test_exception_aborts_writer(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    with pytest.raises(RuntimeError), VideoWriter(out, size=(64, 48), fps=25, audio=clips["audio"],
                                                  temp_dir=tmp_path) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
        raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == [] and ffmpeg_children() == []


def test_writer_rejects_bad_input(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(LipSyncError, match="no audio track"):
        VideoWriter(tmp_path / "o.mp4", size=(64, 48), fps=25, audio=clips["plain"], temp_dir=tmp_path)
    with VideoWriter(tmp_path / "o.mp4", size=(64, 48), fps=25, audio=clips["audio"], temp_dir=tmp_path) as writer:
        with pytest.raises(ValueError):
            writer.write(np.zeros((48, 64, 4), np.uint8))
        writer.write(np.zeros((48, 64, 3), np.uint8))


def test_writer_abort_mid_stream_leaves_no_file_child_or_fd(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "result.mp4"
    with no_garbage_collection():
        before = open_fds()
        writer = VideoWriter(out, size=(64, 48), fps=25, audio=clips["audio"], temp_dir=tmp_path)
        for _ in range(10):
            writer.write(np.zeros((48, 64, 3), np.uint8))
        assert ffmpeg_children()
        writer.abort()
        writer.abort()
        assert list(out.parent.iterdir()) == [] and ffmpeg_children() == [] and open_fds() == before
        with pytest.raises(ValueError, match="closed"):
            writer.write(np.zeros((48, 64, 3), np.uint8))


def test_writer_that_cannot_start_ffmpeg_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no tools here"))
    out = tmp_path / "out" / "result.mp4"
    with no_garbage_collection():
        before = open_fds()
        with pytest.raises(LipSyncError, match="^ffmpeg was not found: install ffmpeg"):
            VideoWriter(out, size=(64, 48), fps=25, audio=None, temp_dir=tmp_path)
        assert open_fds() == before, "the stderr file is closed"
    assert list(out.parent.iterdir()) == []


def test_writer_failures_leave_no_fd(clips: dict[str, Path], tmp_path: Path) -> None:
    with no_garbage_collection():
        before = open_fds()
        writer = VideoWriter(tmp_path / "r.mp4", size=(64, 48), fps=25, audio=None, temp_dir=tmp_path,
                             preset="no-such-preset")
        writer.write(np.zeros((48, 64, 3), np.uint8))
        with pytest.raises(LipSyncError, match="(?i)preset"):
            writer.close()
        assert open_fds() == before and ffmpeg_children() == [] and list(tmp_path.iterdir()) == []


def test_an_ffmpeg_that_fails_while_frames_come_is_told_by_the_next_write(clips: dict[str, Path],
                                                                          tmp_path: Path) -> None:  # fmt: skip
    """A run stops drawing frames once its encoder has failed, instead of drawing them all for nothing."""
    frame, written = np.zeros((480, 640, 3), np.uint8), 0  # three frames fill the pipe
    with pytest.raises(LipSyncError, match="(?i)preset") as failed:
        with VideoWriter(tmp_path / "r.mp4", size=(640, 480), fps=25, audio=clips["audio"], temp_dir=tmp_path,
                         preset="no-such-preset") as writer:  # fmt: skip
            for written in range(1, 101):
                writer.write(frame)
    assert written < 100 and "could not write" in str(failed.value)
    assert ffmpeg_children() == [] and list(tmp_path.iterdir()) == []


def test_writer_whose_file_cannot_be_moved_into_place_says_so(clips: dict[str, Path], tmp_path: Path) -> None:
    taken = tmp_path / "taken.mp4"
    taken.mkdir()  # a folder where the video should go
    (taken / "keep").write_text("x")
    with pytest.raises(LipSyncError, match=f"could not write {taken}"):
        with VideoWriter(taken, size=(64, 48), fps=25, audio=clips["audio"], temp_dir=tmp_path) as writer:
            writer.write(np.zeros((48, 64, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.mp4"], "no partial file is left"
    assert ffmpeg_children() == []


def test_an_interrupt_as_the_writer_moves_its_file_into_place_leaves_no_partial_file(
        clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A batch worker told to stop unwinds wherever its job is, here after ffmpeg finished, before the rename."""

    def interrupted(source: object, target: object) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "out" / "result.mp4"
    writer = VideoWriter(out, size=(64, 48), fps=25, audio=clips["audio"], temp_dir=tmp_path)
    writer.write(np.zeros((48, 64, 3), np.uint8))
    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt), writer:
        pass
    assert list(out.parent.iterdir()) == [] and ffmpeg_children() == []


def test_a_still_is_encoded_with_its_own_x264_setting_and_a_video_without(tmp_path: Path) -> None:
    """STILL_X264_PARAMS reaches x264 for a still (and only there): a moving video keeps the preset's refinement."""
    frames = [np.full((48, 64, 3), level, np.uint8) for level in range(0, 250, 10)]
    written = {}
    for still in (True, False):
        out = tmp_path / f"{'still' if still else 'video'}.mp4"
        with VideoWriter(out, size=(64, 48), fps=25, audio=None, temp_dir=tmp_path, still=still) as writer:
            for frame in frames:
                writer.write(frame)
        written[still] = x264_options(out)
    assert " subme=1 " in written[True] and " subme=1 " not in written[False]
    assert " subme=2 " in written[False], "veryfast's own refinement"


@pytest.mark.parametrize("kind", ["video", "still"])
def test_the_output_is_shown_with_its_input_s_pixel_aspect(tmp_path: Path, kind: str) -> None:
    """Raw frames on a pipe have square pixels: without the tag an anamorphic video (a DVD's 720×576 shown at
    16:9) came out squeezed to 5:4. Both graphs tag it: whole frames, and a still's canvas with its parts."""
    from lipsync import canvas

    frame = np.full((576, 720, 3), 90, np.uint8)
    board = canvas.for_still(frame, (300, 200, 420, 330), "feather", tmp_path) if kind == "still" else None
    part = frame if board is None else board.region.cut(frame)
    out = tmp_path / f"{kind}.mp4"
    with VideoWriter(out, size=(720, 576), fps=25, audio=None, temp_dir=tmp_path, still=board is not None,
                     canvas=board, pixel_aspect=Fraction(64, 45)) as writer:  # fmt: skip
        for _ in range(3):
            writer.write(np.ascontiguousarray(part))
    stream = ffprobe(out)["streams"][0]
    assert (stream["width"], stream["height"]) == (720, 576)
    assert (stream["sample_aspect_ratio"], stream["display_aspect_ratio"]) == ("64:45", "16:9")
    square = write_args(out, width=720, height=576, fps=25, canvas=board)
    assert "setsar" not in " ".join(square), "square pixels are left untagged, as before"


def test_encoder_threads_are_one_for_a_cpu_drawn_still_up_to_720p_only() -> None:
    assert encoder_threads(512, 512, still=True, cpu_bound=True) == 1
    assert encoder_threads(1280, 720, still=True, cpu_bound=True) == 1
    assert encoder_threads(1280, 722, still=True, cpu_bound=True) == 0, "larger: ffmpeg's own threads"
    assert encoder_threads(512, 512, still=False, cpu_bound=True) == 0, "a video's frames change everywhere"
    assert encoder_threads(512, 512, still=True, cpu_bound=False) == 0, "a GPU outruns one encoder thread"


def test_writer_threads_reach_the_filters_and_x264(tmp_path: Path) -> None:
    """threads=1 caps both filter graphs (global options, before the inputs) and x264 (its SEI says threads=1);
    threads=0 leaves all of them to ffmpeg."""
    args = write_args(tmp_path / "o.mp4", width=64, height=48, fps=25, still=True, threads=1)
    first_input = args.index("-i")
    for option in ("-filter_threads", "-filter_complex_threads"):  # global: before the first input
        assert args[args.index(option) + 1] == "1" and args.index(option) < first_input
    assert args[args.index("-threads") + 1] == "1" and args.index("-threads") < args.index("-c:v")
    unset = write_args(tmp_path / "o.mp4", width=64, height=48, fps=25, still=True)
    assert not {"-threads", "-filter_threads", "-filter_complex_threads"} & set(unset)
    frames = [np.full((240, 320, 3), level, np.uint8) for level in range(0, 250, 10)]
    written = {}
    for threads in (1, 0):
        out = tmp_path / f"threads{threads}.mp4"
        with VideoWriter(out, size=(320, 240), fps=25, audio=None, temp_dir=tmp_path, still=True,
                         threads=threads) as writer:
            for frame in frames:
                writer.write(frame)
        written[threads] = x264_options(out)
    assert " threads=1 " in written[1] and " lookahead_threads=1 " in written[1]
    if len(os.sched_getaffinity(0)) > 1:
        assert " threads=1 " not in written[0], "x264's own choice: frame threads per core"
