"""Boxes released a few frames behind the tracker (lipsync.settle) are the boxes of the whole video's finish."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lipsync import settle
from lipsync.boxfollow import BoxFollower
from lipsync.errors import LipSyncError
from lipsync.locate import FaceFinder
from lipsync.options import LipSyncOptions
from test_faces import SquareFinder

SHAPE = (180, 320)


def _scene(rng, frames):
    """A textured bright square that drifts, jumps, leaves for a few frames, and shots cut (the background's level
    changes): per frame the picture and the square (None: away)."""
    grain = rng.integers(150, 256, (80, 80), dtype=np.uint8)
    side, x, y, level = 40, 100.0, 60.0, 0
    out = []
    for _ in range(frames):
        roll = rng.random()
        if roll < 0.04:
            level = 90 - level  # a cut
        elif roll < 0.08:
            x, y = rng.uniform(10, SHAPE[1] - 70), rng.uniform(10, SHAPE[0] - 70)  # a jump
        x = float(np.clip(x + rng.normal(0, 3), 5, SHAPE[1] - side - 5))
        y = float(np.clip(y + rng.normal(0, 2), 5, SHAPE[0] - side - 5))
        away = rng.random() < 0.12 or (out and out[-1][1] is None and rng.random() < 0.6)
        frame = np.full((*SHAPE, 3), level, np.uint8)
        box = None
        if not away:
            x1, y1 = int(x), int(y)
            box = (x1, y1, x1 + side, y1 + side)
            frame[y1:y1 + side, x1:x1 + side] = grain[:side, :side, None]
        out.append((frame, box))
    return out


def _job():
    return SimpleNamespace(face=Path("clip.mp4"), still=False)


def _streamed(finder, frames, every):
    settler = finder.settler()
    boxes, present, lag = [], [], 0
    for index, frame in enumerate(frames, 1):
        finder.push(frame)
        got_boxes, got_present = finder.settle(settler)
        boxes.extend(got_boxes)
        present.extend(got_present)
        if any(box is not None for box in present) or settler.released:
            lag = max(lag, index - settler.released)
    got_boxes, got_present = finder.settle(settler, end=True)
    boxes.extend(got_boxes)
    present.extend(got_present)
    return np.array(boxes).reshape(-1, 4), np.array(present, bool), lag


@pytest.mark.parametrize("seed", range(12))
def test_boxes_released_behind_the_tracker_are_the_whole_videos(seed):
    rng = np.random.default_rng(seed)
    scene = _scene(rng, 70)
    every = int(rng.choice([1, 2, 3, 5, 8]))
    pads = tuple(int(v) for v in rng.integers(-4, 12, 4))
    options = LipSyncOptions(detect_every=every, pads=pads, smooth=bool(seed % 3), face_detector="haar")
    frames = [frame for frame, _ in scene]
    whole = FaceFinder(_job(), options, SquareFinder(), None, 4, None)
    for frame in frames:
        whole.push(frame)
    boxes, present = whole.finish()
    streamed = FaceFinder(_job(), options, SquareFinder(), None, 4, None)
    got_boxes, got_present, lag = _streamed(streamed, frames, every)
    assert len(got_present) == len(frames)
    np.testing.assert_array_equal(got_present, present)
    np.testing.assert_array_equal(got_boxes[present], boxes[present])
    assert present.any() and not present.all(), "the scene has the face and frames without it"
    first_face = int(np.argmax([box is not None for _, box in scene]))
    assert lag <= max(first_face + 1, every + settle.LAG + 1), "frames wait only as long as a box may change"


@pytest.mark.parametrize("seed", range(4))
def test_a_followed_box_settles_to_the_whole_videos_too(seed):
    rng = np.random.default_rng(100 + seed)
    scene = _scene(rng, 50)
    start = next(box for _, box in scene if box is not None)
    frames = [frame for frame, box in scene][scene.index(next(s for s in scene if s[1] is not None)):]
    options = LipSyncOptions(smooth=bool(seed % 2))
    whole = FaceFinder(_job(), options, None, BoxFollower(start, zoom=True, reacquire=True), 4, None)
    for frame in frames:
        whole.push(frame)
    boxes, present = whole.finish()
    streamed = FaceFinder(_job(), options, None, BoxFollower(start, zoom=True, reacquire=True), 4, None)
    got_boxes, got_present, lag = _streamed(streamed, frames, 1)
    np.testing.assert_array_equal(got_present, present)
    np.testing.assert_array_equal(got_boxes[present], boxes[present])
    assert lag <= settle.LAG + 1


def test_nothing_is_released_before_a_face_and_a_video_without_one_is_the_same_error():
    blank = [np.zeros((*SHAPE, 3), np.uint8)] * 30
    finder = FaceFinder(_job(), LipSyncOptions(detect_every=4), SquareFinder(), None, 4, None)
    settler = finder.settler()
    for frame in blank:
        finder.push(frame)
        assert len(finder.settle(settler)[1]) == 0
    with pytest.raises(LipSyncError, match="No face found in any frame of clip.mp4"):
        finder.settle(settler, end=True)


def test_pads_that_empty_a_box_name_its_frame_in_the_video():
    rng = np.random.default_rng(7)
    frames = [frame for frame, _ in _scene(rng, 40)]
    options = LipSyncOptions(detect_every=3, pads=(0, -45, 0, 0))
    whole = FaceFinder(_job(), options, SquareFinder(), None, 4, None)
    for frame in frames:
        whole.push(frame)
    with pytest.raises(LipSyncError) as told:
        whole.finish()
    with pytest.raises(LipSyncError) as streamed:
        _streamed(FaceFinder(_job(), options, SquareFinder(), None, 4, None), frames, 3)
    assert str(streamed.value) == str(told.value)
