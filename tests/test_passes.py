"""Pass 1 on a thread of its own handing frames to pass 2 (lipsync.passes) gives pass 2 the frames and boxes of two
passes one after the other, and the same video."""

from __future__ import annotations

import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import read_video_frames, speech_frames
from media_helpers import ffmpeg_children

import lipsync
from lipsync import locate, passes, settle
from lipsync.errors import LipSyncError
from lipsync.options import LipSyncOptions

HAAR = LipSyncOptions(face_detector="haar", device="cpu", detect_every=4)
FPS = 25
OPEN_PASSES = passes.open_passes


def _write(frames, path: Path) -> Path:
    height, width = frames[0].shape[:2]
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s",
            f"{width}x{height}", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p",
            "-y", str(path)]  # fmt: skip
    subprocess.run(args, input=b"".join(f.tobytes() for f in frames), check=True)
    return path


def _eventful_clip(astronaut, path: Path, count: int, start_without_face: int = 0) -> Path:
    """The astronaut swaying on a 480×384 frame; the face hidden for 6 frames and for 2, a cut (the picture mirrored
    on a lighter ground) a third in; optionally no face in the first frames."""
    import cv2

    face = cv2.resize(astronaut, (320, 320), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(count):
        ground = 40 if i < count // 3 else 110
        frame = np.full((384, 480, 3), ground, np.uint8)
        picture = face if i < count // 3 else face[:, ::-1]
        x, y = 80 + int(20 * np.sin(i / 5)), 32 + int(8 * np.cos(i / 7))
        frame[y:y + 320, x:x + 320] = picture
        away = i < start_without_face or 10 <= i < 16 or i in (count // 3 + 12, count // 3 + 13)
        if away:  # the face hidden (the rest of the picture stays: no cut)
            frame[y + 30:y + 170, x + 80:x + 200] = ground
        frames.append(frame)
    return _write(frames, path)


def _record(monkeypatch, overlap: bool):
    """Run with or without the overlap, keeping what pass 2 was given: (frame as given, box) per output frame."""
    monkeypatch.setattr(passes, "OVERLAP_PASSES", overlap)
    given, kinds, opened = [], [], OPEN_PASSES

    def recording(*args, **kwargs):
        opened_passes = opened(*args, **kwargs)
        kinds.append(type(opened_passes._inner).__name__)
        pairs = opened_passes.pairs

        def copied():
            for frame, box in pairs():
                given.append((frame.copy(), box))
                yield frame, box

        opened_passes.pairs = copied
        return opened_passes

    monkeypatch.setattr(passes, "open_passes", recording)
    return given, kinds


def _run_both(monkeypatch, face: Path, speech: Path, tmp_path: Path, options: LipSyncOptions):
    runs = []
    for overlap in (False, True):
        given, kinds = _record(monkeypatch, overlap)
        out = tmp_path / f"out-{overlap}.mp4"
        result = lipsync.run(face, speech, out, options)
        runs.append((given, kinds, result, read_video_frames(out)))
    return runs


def _assert_same(two, one):
    (given2, kinds2, result2, video2), (given1, kinds1, result1, video1) = two, one
    assert kinds2 == ["TwoPasses"] and kinds1 == ["Streamed"]
    assert len(given1) == len(given2) == result1.frames
    for i, ((frame1, box1), (frame2, box2)) in enumerate(zip(given1, given2)):
        assert box1 == box2, f"frame {i}"
        assert np.array_equal(frame1, frame2), f"frame {i}"
    assert result1.frames_without_face == result2.frames_without_face > 0
    assert result1.notes == result2.notes
    np.testing.assert_array_equal(video1, video2)


def test_one_pass_gives_the_frames_boxes_and_video_of_two(media, astronaut_bgr, tmp_path, monkeypatch):
    """A video longer than the speech: the face sways, leaves, is missed, and the shot cuts."""
    count = speech_frames(media["speech"], FPS) + 20
    clip = _eventful_clip(astronaut_bgr, tmp_path / "clip.mp4", count)
    two, one = _run_both(monkeypatch, clip, media["speech"], tmp_path, HAAR)
    _assert_same(two, one)
    boxes = [box for _, box in one[0]]
    assert boxes[12] is None and boxes[count // 3 + 12] is not None, "away 6 frames: passed through; missed 2: bridged"


def test_one_pass_then_the_loop_from_its_cache_is_the_two_passes_loop(media, astronaut_bgr, tmp_path, monkeypatch):
    """A video shorter than the speech: streamed forward, then played back and forth from pass 1's cache."""
    count = speech_frames(media["speech"], FPS) // 2
    clip = _eventful_clip(astronaut_bgr, tmp_path / "clip.mp4", count)
    two, one = _run_both(monkeypatch, clip, media["speech"], tmp_path, replace(HAAR, smooth=False))
    _assert_same(two, one)
    assert one[2].frames > count


def test_pass_2_takes_its_first_frame_long_before_pass_1_reads_the_last_and_the_video_is_read_once(
        media, astronaut_bgr, tmp_path, monkeypatch):  # fmt: skip
    count = speech_frames(media["speech"], FPS) + 5
    clip = _eventful_clip(astronaut_bgr, tmp_path / "clip.mp4", count)
    monkeypatch.setattr(passes, "STREAM_QUEUE_BYTES", 1)  # pass 1 waits for pass 2 after each frame handed over
    reads, pushed, at_first = [], [0], []
    source_frames, push = passes.source_frames, passes.FaceFinder.push

    def reading(*args):
        reads.append(1)
        return source_frames(*args)

    def counting(finder, frame):
        pushed[0] += 1
        return push(finder, frame)

    for reader in (passes, locate):  # pass 1 reads in lipsync.locate, a second read would come from lipsync.passes
        monkeypatch.setattr(reader, "source_frames", reading)
    monkeypatch.setattr(passes.FaceFinder, "push", counting)
    _, kinds = _record(monkeypatch, True)
    original = passes.Streamed.pairs

    def noting(self):
        for pair in original(self):
            if not at_first:
                at_first.append(pushed[0])
            yield pair

    monkeypatch.setattr(passes.Streamed, "pairs", noting)
    lipsync.run(clip, media["speech"], tmp_path / "once.mp4", HAAR)
    assert kinds == ["Streamed"] and reads == [1], "one decode of the video"
    assert at_first[0] <= HAAR.detect_every + settle.LAG + 2 < pushed[0] // 3


def test_a_face_found_late_makes_two_passes_after_all(media, astronaut_bgr, tmp_path, monkeypatch):
    count = speech_frames(media["speech"], FPS) + 5
    clip = _eventful_clip(astronaut_bgr, tmp_path / "clip.mp4", count, start_without_face=30)
    monkeypatch.setattr(passes, "STREAM_HOLD_BYTES", 20 * 384 * 480 * 3)  # 20 frames: the face comes at 30
    given, kinds = _record(monkeypatch, True)
    result = lipsync.run(clip, media["speech"], tmp_path / "late.mp4", HAAR)
    assert kinds == ["Streamed"] and len(given) == result.frames
    assert all(box is None for _, box in given[:30]) and given[31][1] is not None
    assert result.frames_without_face >= 30


def test_a_video_without_a_face_is_the_same_error_and_nothing_is_left(media, tmp_path, monkeypatch):
    blank = [np.full((256, 320, 3), 90, np.uint8)] * 40
    clip = _write(blank, tmp_path / "blank.mp4")
    out = tmp_path / "none.mp4"
    before = threading.active_count()
    for overlap in (False, True):
        monkeypatch.setattr(passes, "OVERLAP_PASSES", overlap)
        with pytest.raises(LipSyncError, match="No face found in any frame of blank.mp4"):
            lipsync.run(clip, media["speech"], out, HAAR)
        assert not out.exists()
    assert threading.active_count() == before and not ffmpeg_children()


def test_an_error_in_pass_2_stops_pass_1_and_its_reader(media, astronaut_bgr, tmp_path, monkeypatch):
    count = speech_frames(media["speech"], FPS) + 5
    clip = _eventful_clip(astronaut_bgr, tmp_path / "clip.mp4", count)
    monkeypatch.setattr(passes, "STREAM_QUEUE_BYTES", 1)  # pass 1 waits on pass 2 after each frame
    from lipsync import canvas

    pasted = canvas.paster

    def failing(*args, **kwargs):
        paste = pasted(*args, **kwargs)
        calls = []

        def paste_or_fail(*pargs, **pkwargs):
            calls.append(1)
            if len(calls) > 20:
                raise LipSyncError("stop here")
            return paste(*pargs, **pkwargs)

        return paste_or_fail

    monkeypatch.setattr(canvas, "paster", failing)
    before = threading.active_count()
    with pytest.raises(LipSyncError, match="stop here"):
        lipsync.run(clip, media["speech"], tmp_path / "stopped.mp4", HAAR)
    assert threading.active_count() == before and not ffmpeg_children()
    assert not (tmp_path / "stopped.mp4").exists()


def test_which_videos_stream(media):
    from types import SimpleNamespace

    video = SimpleNamespace(still=False, size=(1280, 720))
    assert passes.streams(video, HAAR, detect=lambda frames: [])
    assert not passes.streams(SimpleNamespace(still=True, size=(1280, 720)), HAAR, detect=lambda frames: [])
    assert not passes.streams(SimpleNamespace(still=False, size=(3840, 2160)), HAAR, detect=lambda frames: []), \
        "4K frames held for a keyframe interval would pass the hold's bytes"
    given = replace(HAAR, box=(10, 200, 10, 200))
    assert not passes.streams(video, given, detect=None), "a box that stays put has no pass 1"
    assert passes.streams(video, replace(given, follow_box=True), detect=None)
