"""Face boxes: smoothing as the reference does it, gap filling, pads, tracking detection, Haar on a real photo."""

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
    assert faces.map_back((1300, 10, 1400, 50), 1.0, (720, 1280, 3)) is None, "clipped to nothing: no face"
    assert faces.Crop(0, 0, 1.0, (0, 0, 160, 160)).to_frame((100, 100, 150, 150), (90, 90, 3)) is None


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


class SquareFinder:
    """A real (if simple) detector: the largest bright square in each image it is shown, in that image's pixels.

    Faces are bright squares on a dark frame, so the tracker's crops and downscaled copies are detected
    exactly as the frames are; it records the size of every image it was asked about.
    """

    def __init__(self, min_side: int = 6):
        self.min_side = min_side
        self.shapes: list = []

    def __call__(self, frames):
        import cv2

        found = []
        for frame in frames:
            self.shapes.append(frame.shape[:2])
            count, _, stats, _ = cv2.connectedComponentsWithStats((frame[..., 0] > 128).astype(np.uint8))
            blobs = [stats[i] for i in range(1, count) if min(stats[i][2], stats[i][3]) >= self.min_side]
            if not blobs:
                found.append(None)
                continue
            x, y, w, h, _ = max(blobs, key=lambda b: b[4])
            found.append((int(x), int(y), int(x + w), int(y + h)))
        return found


def _frame(boxes, shape=(720, 1280)):
    frame = np.zeros((*shape, 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        frame[y1:y2, x1:x2] = 255
    return frame


def _flickering_frame(boxes, rng, shape=(720, 1280)):
    """Squares the detector sees (bright blue on dark blue) under red and green snow new in every frame: nothing
    the tracker can follow from one frame to the next in grey (as a face turning), so between keyframes only the
    detector can place the face."""
    frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    frame[..., 0] //= 16
    for x1, y1, x2, y2 in boxes:
        frame[y1:y2, x1:x2, 0] += 240
    return frame


def _grained_frame(box, grain, shape=(720, 1280)):
    """A bright square on a dark frame whose grain moves with it: a face whose pixels can be followed."""
    frame = np.zeros((*shape, 3), np.uint8)
    x1, y1, x2, y2 = box
    frame[y1:y2, x1:x2] = grain[: y2 - y1, : x2 - x1, None]
    return frame


def _track(tracker, frames):
    for frame in frames:
        tracker.push(frame)
    return tracker.finish()


def test_tracking_a_steady_face_detects_keyframes_in_small_crops():
    truth = [(300, 200, 500, 420)] * 40
    finder = SquareFinder()
    found = _track(faces.FaceTracker(finder, every=8, max_side=640, batch=4), [_frame([b]) for b in truth])
    assert [i for i, b in enumerate(found) if b is not None] == [0, 8, 16, 24, 32, 39]
    crop = (faces.ROI_SIDE, faces.ROI_SIDE)
    assert finder.shapes[0] == (320, 320), "the first face is searched in the whole frame, coarse, padded square"
    assert finder.shapes[1:] == [crop] * 6, "placed by a crop, then searched only near where it was"


def test_where_pixels_cannot_be_followed_smooth_motion_costs_about_one_more_detection_per_stretch():
    truth = [(300 + 4 * i, 200 + i, 500 + 4 * i, 420 + i) for i in range(41)]  # 32 px between keyframes
    rng = np.random.default_rng(3)
    finder = SquareFinder()
    found = _track(faces.FaceTracker(finder, every=8, max_side=640, batch=4),
                   [_flickering_frame([b], rng) for b in truth])  # fmt: skip
    assert [i for i, b in enumerate(found) if b is not None] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    filled = faces.fill_gaps(found, "clip")
    assert np.abs(filled - np.array(truth)).max() <= 3, "crop boxes map back to frame pixels; interpolation holds"


def test_a_face_swaying_between_keyframes_is_followed_by_its_pixels_not_the_detector():
    """The face sways 24 px to and fro within each stretch of 8 frames while drifting down: linear motion between
    keyframes misses it by up to 24 px, the detector looks at keyframes alone, and every box is the face's."""
    truth = [(300 + round(24 * np.sin(np.pi * i / 8)) + i, 200 + 2 * i, 500 + round(24 * np.sin(np.pi * i / 8)) + i,
              420 + 2 * i) for i in range(41)]  # fmt: skip
    grain = np.random.default_rng(5).integers(150, 256, (220, 200), dtype=np.uint8)
    finder = SquareFinder()
    found = _track(faces.FaceTracker(finder, every=8, max_side=640, batch=4), [_grained_frame(b, grain) for b in truth])
    assert all(b is not None for b in found)
    assert np.abs(np.array(found) - np.array(truth)).max() <= 2
    keyframes = [0, 8, 16, 24, 32, 40]
    assert len(finder.shapes) == 1 + len(keyframes), "the first whole-frame search, then one crop per keyframe"
    straight = faces.fill_gaps([b if i in keyframes else None for i, b in enumerate(truth)], "clip")
    assert np.abs(straight - np.array(truth)).max() >= 20, "a straight line between keyframes would miss the face"


def test_frames_between_keyframes_are_detected_where_the_face_jumped():
    truth = [(300, 200, 500, 420)] * 20 + [(900, 300, 1100, 520)] * 20  # jumps out of the crop at frame 20
    finder = SquareFinder()
    found = _track(faces.FaceTracker(finder, every=8, max_side=640, batch=4), [_frame([b]) for b in truth])
    assert all(found[i] is None for i in range(1, 8)), "steady stretches stay sparse"
    filled = faces.fill_gaps(found, "clip")
    assert np.abs(filled - np.array(truth)).max() <= 3, "the jump is pinned down to the frame"
    assert sum(box is not None for box in found) < 20, "by halving the stretch, not by detecting every frame"


def test_a_face_that_leaves_is_none_and_said_to_be_absent():
    truth = [(300, 200, 500, 420)] * 24
    frames = [_frame([b]) for b in truth] + [_frame([])] * 16
    tracker = faces.FaceTracker(SquareFinder(), every=8, max_side=640, batch=4)
    found = _track(tracker, frames)
    assert found[24] is None and found[39] is None and found[16] is not None
    last = max(i for i, b in enumerate(found) if b is not None)
    assert last == 23, "the frames before the keyframe that lost it were looked at"
    assert tracker.absent() == [False] * 24 + [True] * 16
    assert faces.fill_gaps(found, "clip")[-1].tolist() == list(found[last]), "boxes exist for every frame"


def test_the_tracked_face_is_kept_when_a_bigger_one_appears():
    first, other = (300, 200, 500, 420), (800, 100, 1200, 600)
    frames = [_frame([first])] * 10 + [_frame([first, other])] * 30
    found = _track(faces.FaceTracker(SquareFinder(), every=8, max_side=640, batch=4), frames)
    assert all(np.abs(np.array(b) - first).max() <= 3 for b in found if b is not None)
    whole = SquareFinder()(faces.downscale([frames[-1]], 0.5))[0]
    assert whole[0] > 350, "detecting the whole frame would have jumped to the bigger face"


def test_every_one_detects_every_frame():
    finder = SquareFinder()
    found = _track(faces.FaceTracker(finder, every=1, max_side=640, batch=16), [_frame([(300, 200, 500, 420)])] * 7)
    assert all(b is not None for b in found) and finder.shapes.count((faces.ROI_SIDE, faces.ROI_SIDE)) == 7


def test_a_small_face_in_a_big_still_is_searched_again_larger():
    still = _frame([(1000, 1000, 1012, 1012)], shape=(2000, 2000))  # 3.8 px at 640: below the finder's 6 px
    assert _track(faces.FaceTracker(SquareFinder(), 1, 640, 1), [still]) == [None]
    finder = SquareFinder()
    [box] = _track(faces.FaceTracker(finder, 1, 640, 1, retry_larger=True), [still])
    assert finder.shapes == [(320, 320), (640, 640), (1280, 1280), (faces.ROI_SIDE, faces.ROI_SIDE)]
    assert box is not None and np.abs(np.array(box) - (1000, 1000, 1012, 1012)).max() <= 2


@pytest.mark.parametrize("box", [(300, 200, 500, 420), (0, 0, 90, 120), (1200, 650, 1280, 720)])
def test_crop_boxes_map_back_to_the_frame(box):
    frame = _frame([box])
    patch, crop = faces.roi_crop(frame, box)
    assert patch.shape == (faces.ROI_SIDE, faces.ROI_SIDE, 3)
    [inside] = SquareFinder()([patch])
    assert np.abs(np.array(crop.to_frame(inside, frame.shape)) - box).max() <= 2, "and past the edges, black"


def test_haar_takes_the_most_confident_face_not_the_biggest_hit(astronaut_bgr):
    """On this two-face picture, at detection size, Haar's biggest hit is a false one on her suit."""
    from test_bad_inputs import two_faces

    small = faces.downscale([two_faces(astronaut_bgr)], 0.625)[0]
    x1, y1, x2, y2 = faces.HaarDetector()([small])[0]
    assert 95 < x1 < 125 and 160 < x2 < 195 and y1 < 60, "the larger, real face on the left"


def test_whole_frames_reach_the_detector_in_one_shape_per_search_size():
    """Every video's whole-frame searches share the same input shapes, so a long-lived app compiles (and keeps)
    only those."""
    for shape in ((720, 1280), (1280, 720), (480, 640), (1080, 1920)):
        finder = SquareFinder()
        _track(faces.FaceTracker(finder, every=8, max_side=640, batch=2), [_frame([], shape=shape)] * 3)
        assert set(finder.shapes) == {(320, 320), (640, 640)}, shape  # coarse, then at detect_max_side
    assert faces.pad_to_square(np.ones((5, 7, 3), np.uint8), 0).shape == (5, 7, 3), "full size: as it is"


def test_a_face_the_crop_cuts_through_is_not_taken_for_a_whole_one():
    frame = _frame([(300, 200, 500, 420)])
    patch, crop = faces.roi_crop(frame, (550, 200, 750, 420))  # the crop's left side runs through the face
    [inside] = SquareFinder()([patch])
    assert inside is not None and inside[0] == 0, "the detector sees the visible part of the face"
    assert crop.to_frame(inside, frame.shape) is None, "which must not pass for the face"


class ManySquares(SquareFinder):
    """Every bright square of an image, the brightest (most confident) first: a detector of several faces."""

    def __call__(self, frames):
        return [found[0][0] if found else None for found in self.faces(frames)]

    def faces(self, frames):
        import cv2

        found = []
        for frame in frames:
            self.shapes.append(frame.shape[:2])
            count, labels, stats, _ = cv2.connectedComponentsWithStats((frame[..., 0] > 128).astype(np.uint8))
            blobs = [(tuple(int(v) for v in (x, y, x + w, y + h)), float(frame[..., 0][labels == i].mean()))
                     for i, (x, y, w, h, _) in enumerate(stats) if i and min(w, h) >= self.min_side]
            found.append(sorted(blobs, key=lambda blob: -blob[1]))
        return found


def _faces_frame(boxes, shades, shape=(720, 1280), background=0):
    frame = np.full((*shape, 3), background, np.uint8)
    for (x1, y1, x2, y2), shade in zip(boxes, shades):
        frame[y1:y2, x1:x2] = shade
    return frame


LEFT, MIDDLE, RIGHT = (100, 200, 260, 380), (560, 220, 720, 400), (1000, 200, 1160, 380)


def _near(box, truth, tolerance=3):
    return box is not None and np.abs(np.array(box) - truth).max() <= tolerance


@pytest.mark.parametrize("index, truth", [(None, MIDDLE), (0, LEFT), (1, MIDDLE), (2, RIGHT)])
def test_face_index_counts_from_the_left_and_the_default_is_the_most_confident(index, truth):
    frames = [_faces_frame([RIGHT, LEFT, MIDDLE], [200, 180, 250])] * 20
    tracker = faces.FaceTracker(ManySquares(), every=8, max_side=640, batch=4, face_index=index)
    found = _track(tracker, frames)
    assert all(_near(box, truth) for box in found if box is not None) and found[0] is not None
    if index is not None:
        numbered = [box for box, _ in tracker.first_faces.faces]
        assert tracker.first_faces.frame == 0 and [b[0] < 600 for b in numbered] == [True, True, False]
        assert all(_near(b, t, 4) for b, t in zip(numbered, (LEFT, MIDDLE, RIGHT)))


def test_a_face_index_beyond_the_faces_found_says_how_many_there_are():
    frames = [_frame([])] * 9 + [_faces_frame([LEFT, RIGHT], [200, 200])] * 4
    with pytest.raises(LipSyncError) as caught:
        _track(faces.FaceTracker(ManySquares(), every=8, max_side=640, batch=4, face_index=2), frames)
    assert str(caught.value) == ("face_index 2 asks for the third face from the left, but only 2 faces were found in "
                                 "the first frame with faces (frame 9); use 0–1, or leave it out for the most "
                                 "confident face")


def test_the_followed_face_is_the_nearest_not_the_most_confident_and_absent_when_it_is_away():
    """Two faces drifting right; the dimmer left one is chosen, turns away for frames 12–27, then returns."""
    frames, truth = [], []
    for i in range(40):
        left = (100 + 3 * i, 200, 260 + 3 * i, 380)
        right = (500 + 3 * i, 200, 660 + 3 * i, 380)  # 2.5 face sizes away: inside a crop around the left one
        away = 12 <= i < 28
        frames.append(_faces_frame([right] if away else [left, right], [250] if away else [150, 250]))
        truth.append(None if away else left)
    tracker = faces.FaceTracker(ManySquares(), every=8, max_side=640, batch=4, face_index=0)
    found = _track(tracker, frames)
    assert tracker.absent() == [t is None for t in truth], "absent exactly while away: never the other face"
    filled = faces.fill_gaps(found, "clip")
    assert all(np.abs(filled[i] - truth[i]).max() <= 3 for i in range(40) if truth[i] is not None)


def test_the_default_follows_the_face_it_started_with_when_a_more_confident_one_comes_close():
    frames = [_faces_frame([LEFT], [150])] * 8 + [_faces_frame([LEFT, (300, 200, 460, 380)], [150, 250])] * 17
    found = _track(faces.FaceTracker(ManySquares(), every=8, max_side=640, batch=4), frames)
    assert all(_near(box, LEFT) for box in found if box is not None)


def test_no_box_is_interpolated_across_a_scene_cut():
    """Shot 1: a face at the left; shot 2 (another background): the face at the right. Keyframes every 8 frames
    would interpolate frames 17–23 between the two places; the cut at frame 21 makes 20 and 21 keyframes."""
    frames = [_faces_frame([LEFT], [250])] * 21 + [_faces_frame([RIGHT], [250], background=90)] * 19
    tracker = faces.FaceTracker(SquareFinder(), every=8, max_side=640, batch=4)
    found = _track(tracker, frames)
    assert tracker.cuts == [21] and found[20] is not None and found[21] is not None
    filled = faces.fill_gaps(found, "clip")
    assert all(_near(b, LEFT) for b in filled[:21]) and all(_near(b, RIGHT) for b in filled[21:])
    smoothed = faces.shots.smooth_runs(filled, [True] * 40, tracker.cuts)
    assert all(_near(b, LEFT) for b in smoothed[:21]) and all(_near(b, RIGHT) for b in smoothed[21:])
    assert not any(_near(b, LEFT) for b in faces.smooth(filled)[17:21]), "plain smoothing would mix the shots"


def test_runs_split_at_gaps_and_cuts_and_smoothing_within_one_run_is_the_references():
    from lipsync import shots

    assert shots.runs([True, True, False, True, True, True], cuts=[4]) == [(0, 2), (3, 4), (4, 6)]
    assert shots.runs([False, False]) == []
    rng = np.random.default_rng(1)
    boxes = rng.integers(0, 500, size=(23, 4)).astype(np.int64)
    np.testing.assert_array_equal(shots.smooth_runs(boxes, [True] * 23), reference_smooth(boxes))


def test_cuts_are_big_changes_of_the_whole_picture_not_motion(astronaut_bgr):
    from lipsync import shots

    detector = shots.CutDetector()
    shifted = np.roll(astronaut_bgr, 9, axis=1)
    plain = np.full_like(astronaut_bgr, 120)
    assert [detector.cut(f) for f in (astronaut_bgr, shifted, astronaut_bgr, plain, plain, astronaut_bgr)] == [
        False, False, False, True, False, True]


def test_haar_numbers_two_real_faces_left_to_right(astronaut_bgr):
    twice = np.concatenate([astronaut_bgr, astronaut_bgr], axis=1)
    assert len(faces.HaarDetector().faces([twice])[0]) == 2
    for index, (low, high) in enumerate([(0, 512), (512, 1024)]):
        [box] = _track(faces.FaceTracker(faces.HaarDetector(), 1, 640, 1, retry_larger=True, face_index=index), [twice])
        assert box is not None and low < box[0] < box[2] < high


def test_a_face_missed_in_a_frame_or_two_within_a_shot_is_a_miss_not_an_absence():
    from lipsync import shots

    away = [False, True, False, False, True, True, False, True, True, True, False, True]
    bridged = [False, False, False, False, False, False, False, True, True, True, False, True]
    assert shots.bridge_misses(away) == bridged, "three in a row, or at the end: the face is away"
    assert shots.bridge_misses([False, True, False], cuts=[1]) == [False, True, False], "a cut on either side"
    assert shots.bridge_misses([False, True, False], cuts=[2]) == [False, True, False]
