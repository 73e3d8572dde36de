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


@pytest.mark.parametrize("fps, runs_at", [(120.0, 60.0), (119.88, 59.94), (100.0, 50.0), (240.0, 60.0),
                                          (144.0, 48.0), (90.0, 45.0), (60.3, 60.3)])  # fmt: skip
def test_a_fast_video_runs_at_a_whole_fraction_of_its_rate_at_most_60(fps: float, runs_at: float) -> None:
    """One frame in n (motion stays even): a phone's slow motion at 120 frames/s was 4.8x the work of 25. A mean of
    60.3 (a variable-rate phone video) is 60, with every frame kept."""
    assert run_rate(replace(VIDEO, fps=fps), LipSyncOptions()) == pytest.approx(runs_at)
    assert run_rate(replace(VIDEO, fps=fps), LipSyncOptions(fps=12.0)) == pytest.approx(runs_at), "--fps is a still's"


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
    slow_motion = replace(VIDEO, fps=120.0, frame_count=240, duration=2.0)
    assert read_at(slow_motion, 60.0) == replace(slow_motion, fps=60.0, frame_count=120), "read slower: half"
