"""Tests for lipsync.job: the rate a run works at, and the video as read at that rate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lipsync.job import MIN_VIDEO_FPS, read_at, run_rate
from lipsync.mediainfo import MediaInfo
from lipsync.options import LipSyncOptions

VIDEO = MediaInfo(Path("clip.mp4"), False, 64, 48, 25.0, 50, 2.0, True, False)
PICTURE = MediaInfo(Path("face.png"), True, 64, 48, 25.0, 1, 0.0, True, False)


@pytest.mark.parametrize("fps", [23.976, 25.0, 29.97, 60.0, MIN_VIDEO_FPS])
def test_a_video_at_a_usual_rate_keeps_it_whatever_fps_says(fps: float) -> None:
    assert run_rate(replace(VIDEO, fps=fps), LipSyncOptions(fps=12.0)) == fps
    assert run_rate(replace(VIDEO, fps=fps), LipSyncOptions(fps=50.0)) == fps


def test_a_slow_video_runs_at_fps_unless_fps_is_slower_still() -> None:
    gif = replace(VIDEO, fps=10.0)
    assert run_rate(gif, LipSyncOptions()) == 25.0
    assert run_rate(gif, LipSyncOptions(fps=30.0)) == 30.0
    assert run_rate(gif, LipSyncOptions(fps=8.0)) == 10.0, "never slower than the video itself"
    assert run_rate(replace(VIDEO, fps=0.5), LipSyncOptions()) == 25.0, "a slideshow"


def test_a_picture_runs_at_fps() -> None:
    assert run_rate(PICTURE, LipSyncOptions(fps=30.0)) == 30.0


def test_a_video_read_faster_counts_the_frames_the_fps_filter_gives() -> None:
    gif = replace(VIDEO, fps=10.0, frame_count=5, duration=0.5)
    assert read_at(gif, 25.0) == replace(gif, fps=25.0, frame_count=13)  # 0.5 s at 25 frames/s, rounded up
    undated = replace(gif, duration=0.0)
    assert read_at(undated, 25.0).frame_count == 13, "from its frame count when its duration is unknown"
    assert read_at(VIDEO, 25.0) is VIDEO and read_at(PICTURE, 30.0) is PICTURE
