"""Face boxes: smoothing as the reference does it, gap filling, pads, downscaled detection, Haar on a real photo."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync import faces
from lipsync.errors import LipSyncError


def reference_smooth(boxes: np.ndarray, T: int = 5) -> np.ndarray:
    """Direct transcription of the reference's get_smoothened_boxes (in place on an int array)."""
    boxes = boxes.copy()
    for i in range(len(boxes)):
        if i + T > len(boxes):
            window = boxes[len(boxes) - T :]
        else:
            window = boxes[i : i + T]
        boxes[i] = np.mean(window, axis=0)
    return boxes


def test_smooth_matches_reference_including_the_tail():
    rng = np.random.default_rng(0)
    boxes = rng.integers(0, 500, size=(23, 4)).astype(np.int64)
    np.testing.assert_array_equal(faces.smooth(boxes), reference_smooth(boxes))


def test_smooth_short_sequence_averages_all():
    boxes = np.array([[0, 0, 10, 10], [10, 10, 20, 20]])
    assert faces.smooth(boxes).tolist() == [[5, 5, 15, 15], [5, 5, 15, 15]]


def test_fill_gaps_interpolates_between_neighbours_and_holds_ends():
    found = [None, (0, 0, 10, 10), None, None, (30, 30, 40, 40), None]
    filled = faces.fill_gaps(found, "clip.mp4")
    assert filled.tolist() == [
        [0, 0, 10, 10],
        [0, 0, 10, 10],
        [10, 10, 20, 20],
        [20, 20, 30, 30],
        [30, 30, 40, 40],
        [30, 30, 40, 40],
    ]


def test_no_face_anywhere_is_a_clear_error():
    with pytest.raises(LipSyncError, match=r"No face found in any frame of clip\.mp4.*--box"):
        faces.fill_gaps([None, None], "clip.mp4")


def test_pads_grow_top_bottom_left_right_and_clip():
    boxes = np.array([[10, 20, 50, 60], [0, 0, 100, 95]])
    padded = faces.apply_pads(boxes, (5, 10, 3, 7), (100, 100, 3))
    assert padded.tolist() == [[7, 15, 57, 70], [0, 0, 100, 100]]


def test_fixed_box_converts_y1y2x1x2_and_rejects_outside():
    assert faces.fixed_box((10, 90, 20, 80), (100, 200, 3)) == (20, 10, 80, 90)
    with pytest.raises(LipSyncError, match="outside"):
        faces.fixed_box((500, 600, 10, 20), (100, 200, 3))


def test_detection_scale_and_map_back():
    assert faces.detection_scale((720, 1280, 3), 640) == 0.5
    assert faces.detection_scale((300, 200, 3), 640) == 1.0
    assert faces.detection_scale((3000, 200, 3), 0) == 1.0
    assert faces.map_back((10, 20, 300, 400), 0.5, (720, 1280, 3)) == (20, 40, 600, 720)


def test_haar_finds_the_astronaut_face(astronaut_bgr):
    """A real photo: the box must cover her face (eyes to chin), not the badge or the flag."""
    box = faces.HaarDetector()([astronaut_bgr])[0]
    assert box is not None
    x1, y1, x2, y2 = box
    # the face in skimage's astronaut (512×512) spans roughly x 170–270, y 60–200
    assert 140 < x1 < 200 and 240 < x2 < 300
    assert 30 < y1 < 110 and 170 < y2 < 240


def test_haar_detection_on_a_downscaled_copy_maps_back(astronaut_bgr):
    import cv2

    big = cv2.resize(astronaut_bgr, (1536, 1536))
    scale = faces.detection_scale(big.shape, 512)
    small = faces.downscale([big], scale)
    big_box = faces.map_back(faces.HaarDetector()(small)[0], scale, big.shape)
    small_box = faces.HaarDetector()([astronaut_bgr])[0]
    assert big_box is not None and small_box is not None
    np.testing.assert_allclose(np.array(big_box) / 3, small_box, atol=6)


def test_haar_returns_none_without_a_face():
    blank = np.full((240, 320, 3), 127, np.uint8)
    assert faces.HaarDetector()([blank, blank]) == [None, None]


class FakeDetector:
    """Answers from a known box track; counts which frames it was asked about."""

    def __init__(self, track):
        self.track = track
        self.asked = []

    def __call__(self, frames):
        indices = [int(f[0, 0, 0]) for f in frames]
        self.asked += indices
        return [self.track[i] for i in indices]


def _numbered_frames(n):
    return [np.full((4, 4, 3), i, np.uint8) for i in range(n)]


def test_sparse_detection_on_a_steady_face_only_asks_keyframes():
    track = [(100 + i // 4, 50, 200 + i // 4, 170) for i in range(40)]  # drifts a pixel every 4 frames
    detector = FakeDetector(track)
    found = faces.detect_sparse(_numbered_frames(40), detector, every=8, batch=3)
    assert sorted(detector.asked) == [0, 8, 16, 24, 32, 39]
    filled = faces.fill_gaps(found, "clip")
    assert np.abs(filled - np.array(track)).max() <= 1, "interpolation between keyframes tracks a slow drift"


def test_sparse_detection_refines_where_the_face_jumps_or_vanishes():
    track = [(100, 50, 200, 170)] * 20 + [(400, 50, 500, 170)] * 10 + [None] * 10
    detector = FakeDetector(track)
    found = faces.detect_sparse(_numbered_frames(40), detector, every=8, batch=4)
    assert found[16:25] == track[16:25], "frames between keyframes that moved are detected, not interpolated"
    assert found[1:8] == [None] * 7, "frames between steady keyframes are left for interpolation"
    assert set(range(17, 24)) <= set(detector.asked) and set(range(33, 39)) <= set(detector.asked)
    assert set(range(1, 8)).isdisjoint(detector.asked), "steady stretches stay sparse"


def test_every_one_detects_every_frame():
    detector = FakeDetector([(0, 0, 10, 10)] * 7)
    faces.detect_sparse(_numbered_frames(7), detector, every=1, batch=16)
    assert sorted(detector.asked) == list(range(7))
