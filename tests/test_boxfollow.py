"""--follow_box: a face box given on a video's first frame moves with the face it frames (a cartoon no detector
finds), while its mouth changes; it stays put where the face is gone or nothing can be followed."""

from __future__ import annotations

import numpy as np
import pytest
from media_helpers import SKETCH_BOX, face_sketch

import lipsync
from lipsync.boxfollow import BoxFollower, follow_between
from lipsync.errors import LipSyncError
from lipsync.options import LipSyncOptions

Y1, Y2, X1, X2 = SKETCH_BOX
START = (X1, Y1, X2, Y2)  # as the follower takes it: x1, y1, x2, y2


def _path(count: int) -> list:
    """The face's (dx, dy) per frame: a figure of eight, up to 40 px across and 25 down, several px a frame."""
    return [(round(40 * np.sin(i / 6)), round(25 * np.sin(i / 4))) for i in range(count)]


@pytest.mark.parametrize("zoom", [False, True])
def test_the_box_follows_a_moving_cartoon_face_to_the_pixel_while_its_mouth_changes(zoom):
    """Following sizes too (zoom) keeps a face that does not change size at its size, to the pixel."""
    follower = BoxFollower(START, zoom=zoom)
    for index, (dx, dy) in enumerate(_path(60)):
        box = follower.push(face_sketch(dx, dy, mouth_open=(0, 12, 24)[index % 3]))
        assert box == (X1 + dx, Y1 + dy, X2 + dx, Y2 + dy), index
    assert follower.lost == 0


def _zoomed(drawing, scale, centre):
    """The drawing enlarged (or reduced) `scale` times about `centre`, as a camera zooming on it."""
    import cv2

    (cx, cy) = centre
    warp = np.array([[scale, 0, cx * (1 - scale)], [0, scale, cy * (1 - scale)]])
    return cv2.warpAffine(drawing, warp, (640, 480), flags=cv2.INTER_LINEAR, borderValue=(200, 220, 235))


def _scaled(box, scale, centre):
    cx, cy = centre
    x1, y1, x2, y2 = box
    return (cx + (x1 - cx) * scale, cy + (y1 - cy) * scale, cx + (x2 - cx) * scale, cy + (y2 - cy) * scale)


@pytest.mark.parametrize("end_scale", [1.4, 0.7])
def test_with_zoom_the_box_grows_and_shrinks_with_a_face_coming_closer_or_going_away(end_scale):
    """Over 40 frames the face drifts 30 px right while the camera zooms to 1.4 (0.7) times: the box's size
    keeps within 3 % of the face's, and its sides within 4 px of where they belong; without zoom the box keeps
    its size, off by more than a quarter at the end."""
    frames, truths = [], []
    for index in range(41):
        scale, dx = 1 + (end_scale - 1) * index / 40, round(30 * index / 40)
        centre = (320 + dx, 240)
        frames.append(_zoomed(face_sketch(dx, 0, mouth_open=(0, 16)[index % 2]), scale, centre))
        truths.append(_scaled((X1 + dx, Y1, X2 + dx, Y2), scale, centre))
    zooming, fixed = BoxFollower(START, zoom=True), BoxFollower(START)
    for frame, truth in zip(frames, truths):
        box = zooming.push(frame)
        assert abs((box[2] - box[0]) / (truth[2] - truth[0]) - 1) <= 0.03, (box, truth)
        assert np.abs(np.array(box) - truth).max() <= 4, (box, truth)
        fixed.push(frame)
    assert zooming.lost == 0
    assert abs((fixed.box[2] - fixed.box[0]) / (truths[-1][2] - truths[-1][0]) - 1) >= 0.25


def test_where_the_face_is_gone_the_box_stays_then_finds_it_again():
    follower = BoxFollower(START)
    follower.push(face_sketch())
    follower.push(face_sketch(12, 6))
    blank = np.full((480, 640, 3), (200, 220, 235), np.uint8)
    assert follower.push(blank) == (X1 + 12, Y1 + 6, X2 + 12, Y2 + 6) and follower.lost == 1
    assert follower.push(face_sketch(20, 10)) == (X1 + 20, Y1 + 10, X2 + 20, Y2 + 10)


def _wide(dx: int, dy: int = 0):
    """The drawing on a frame twice as wide, its face moved by (dx, dy) px: room to come back far from where it
    left."""
    wide = np.full((480, 1280, 3), (200, 220, 235), np.uint8)
    wide[:, 320:960] = face_sketch()
    return np.roll(wide, (dy, dx), axis=(0, 1))


def test_with_reacquire_a_face_that_left_is_found_again_wherever_it_comes_back():
    """Gone for five frames (a blank wall), the face comes back 560 px away, far past the near search: found
    there and followed on; without reacquire the box waits where the face was."""
    start = _moved(START, 320, 0)
    blank = np.full((480, 1280, 3), (200, 220, 235), np.uint8)
    back = [_wide(-280, 20), _wide(-275, 22)]
    seen = {}
    for reacquire in (True, False):
        follower = BoxFollower(start, reacquire=reacquire)
        follower.push(_wide(0))
        assert follower.push(_wide(30)) == _moved(start, 30, 0) and follower.found
        for _ in range(5):
            assert follower.push(blank) == _moved(start, 30, 0) and not follower.found
        seen[reacquire] = [(follower.push(frame), follower.found) for frame in back]
    assert seen[True] == [(_moved(start, -280, 20), True), (_moved(start, -275, 22), True)]
    assert seen[False] == [(_moved(start, 30, 0), False)] * 2


def test_a_face_leaving_the_frame_takes_the_box_to_the_edge_not_past_it():
    follower = BoxFollower(START)
    follower.push(face_sketch())
    for dx in range(20, 240, 20):  # the face slides right, over the frame's edge
        x1, y1, x2, y2 = follower.push(face_sketch(dx))
        assert x2 <= 640 and x2 - x1 == X2 - X1 and y1 == Y1
    assert x2 == 640


def test_a_box_on_nothing_to_follow_stays_where_it_was_given_until_the_face_fades_in():
    flat = np.full((480, 640, 3), 128, np.uint8)
    follower = BoxFollower(START)
    for _ in range(3):
        assert follower.push(flat) == START
    # a fade from black, the face moving already: the box is where it was given in the first frame with something
    # in it, and follows from there
    for step in range(1, 9):
        faded = (face_sketch(step, 0).astype(np.float32) * step / 8).astype(np.uint8)
        assert follower.push(faded) == (X1 + step - 1, Y1, X2 + step - 1, Y2), step
    assert follower.push(face_sketch(31, 10)) == (X1 + 30, Y1 + 10, X2 + 30, Y2 + 10)


def _moved(box, dx, dy, grow=0):
    x1, y1, x2, y2 = box
    return (x1 + dx - grow, y1 + dy - grow, x2 + dx + grow, y2 + dy + grow)


def test_between_two_keyframes_the_boxes_take_the_face_s_path_and_end_at_the_detector_s_box():
    """The face swings out and back while the detector's box grows by 4 px a side from one keyframe to the next:
    each box between is where the face is (not on the straight line), its size part way from one box to the other."""
    path = [(round(30 * np.sin(np.pi * i / 8)) + 2 * i, 3 * i) for i in range(9)]
    frames = [face_sketch(dx, dy, mouth_open=(0, 20)[i % 2]) for i, (dx, dy) in enumerate(path)]
    last = _moved(START, *path[-1], grow=4)
    boxes = follow_between(frames, START, last, tolerance=0.08)
    assert boxes is not None and len(boxes) == 7
    for i, box in enumerate(boxes, 1):
        grow = 4 * i / 8
        assert np.abs(np.array(box) - _moved(START, *path[i], grow=grow)).max() <= 1, i
    straight = np.array(START) + (np.array(last) - START) * 4 / 8
    assert np.abs(np.array(boxes[3]) - straight).max() >= 25, "the face is off the straight line mid-way"


def test_between_two_keyframes_following_gives_way_to_the_detector_where_it_cannot_tell():
    frames = [face_sketch(2 * i, 0) for i in range(9)]
    end = _moved(START, 16, 0)
    assert follow_between(frames, START, end, 0.08) is not None
    blank = np.full((480, 640, 3), (200, 220, 235), np.uint8)
    assert follow_between(frames[:4] + [blank] + frames[5:], START, end, 0.08) is None, "lost in a frame"
    assert follow_between(frames, START, _moved(START, 16 + 40, 0), 0.08) is None, "ends far from the detector's box"
    flat = [np.full((480, 640, 3), 128, np.uint8)] + frames[1:]
    assert follow_between(flat, START, end, 0.08) is None, "nothing in the first box to follow"
    jump = [face_sketch()] + [face_sketch(-150, 20)] * 3  # beyond the near search: a loose match 110 px off
    assert follow_between(jump, START, _moved(START, -150, 20), 0.08) is None, "a weak match is not taken"


def test_a_followed_face_away_for_a_while_is_left_alone_and_redrawn_where_it_comes_back(tmp_path, media):
    """End to end: a cartoon, a cutaway to a wall with a picture on it for 12 frames (no mouth is painted on it:
    those frames pass through unchanged and the result says so), then the cartoon again further left, redrawn
    there."""
    import cv2
    from conftest import read_video_frames, speech_frames
    from media_helpers import ffmpeg

    total = speech_frames(media["speech"], 25) + 2
    wall = np.full((480, 640, 3), (120, 160, 200), np.uint8)
    cv2.rectangle(wall, (150, 120), (470, 360), (40, 90, 60), 12)
    cutaway = range(20, 32)
    for index in range(total):
        frame = wall if index in cutaway else face_sketch(*((0, 0) if index < 20 else (-90, 10)))
        cv2.imwrite(str(tmp_path / f"f{index:03d}.png"), frame)
    clip = tmp_path / "cutaway.mp4"
    ffmpeg("-framerate", "25", "-i", tmp_path / "f%03d.png", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", clip)
    result = lipsync.run(clip, media["speech"], tmp_path / "out.mp4",
                         LipSyncOptions(box=SKETCH_BOX, follow_box=True, device="cpu"))  # fmt: skip
    assert result.frames_without_face == len(cutaway)
    frames = read_video_frames(result.outfile).astype(int)

    def redrawn(result_frame, source):  # an area changed, not the encode's thin lines along sharp edges
        changed = (np.abs(result_frame - source).max(axis=2) > 24).astype(np.uint8)
        return np.nonzero(cv2.morphologyEx(changed, cv2.MORPH_OPEN, np.ones((7, 7), np.uint8)))

    assert all(redrawn(frames[i], wall)[0].size == 0 for i in cutaway), "no mouth is painted on the wall"
    rows, cols = redrawn(frames[40], face_sketch(-90, 10))
    assert rows.size and rows.min() >= Y1 + 10 and abs(cols.mean() - (X1 + X2) / 2 + 90) < 8, "redrawn where it is"


def test_following_needs_a_box_and_the_command_line_has_the_flag():
    from lipsync.cli import build_parser, options_from_args

    with pytest.raises(LipSyncError, match="follow_box .* give the box too"):
        LipSyncOptions(follow_box=True)
    args = ["--face", "f.mp4", "--audio", "a.wav", "--outfile", "/tmp/o.mp4", "--box", *map(str, SKETCH_BOX)]
    options = options_from_args(build_parser().parse_args([*args, "--follow_box"]))
    assert options.follow_box and options.box == SKETCH_BOX
    assert options_from_args(build_parser().parse_args(args)).follow_box is False


def test_the_frame_to_place_the_box_on_is_the_first_the_follower_takes_its_template_from(tmp_path):
    """A moving video's frame to click on is its first (where the follower starts), not the next one; a fade's is
    past the fade."""
    import cv2
    from media_helpers import ffmpeg

    from lipsync.picker import first_frame

    for index, (dx, dy) in enumerate(_path(6)):
        cv2.imwrite(str(tmp_path / f"f{index:03d}.png"), face_sketch(dx, dy))
    clip = tmp_path / "moving.mp4"
    ffmpeg("-framerate", "25", "-i", tmp_path / "f%03d.png", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", clip)
    frame, _ = first_frame(clip)
    errors = [np.abs(frame.astype(int) - face_sketch(dx, dy)).mean() for dx, dy in _path(6)]
    assert int(np.argmin(errors)) == 0, errors


def test_a_cartoon_video_speaks_with_its_mouth_redrawn_where_the_face_has_moved(tmp_path, media):
    """End to end: the moving cartoon's mouth is redrawn inside the followed box in each frame; the same box
    without following stays where it was given, and misses the moved face."""
    import cv2
    from conftest import read_video_frames
    from media_helpers import ffmpeg

    path = _path(50)
    for index, (dx, dy) in enumerate(path):
        cv2.imwrite(str(tmp_path / f"f{index:03d}.png"), face_sketch(dx, dy))
    clip = tmp_path / "cartoon.mp4"
    ffmpeg("-framerate", "25", "-i", tmp_path / "f%03d.png", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", clip)
    options = LipSyncOptions(box=SKETCH_BOX, follow_box=True, device="cpu")
    followed, fixed = tmp_path / "followed.mp4", tmp_path / "fixed.mp4"
    lipsync.run(clip, media["speech"], followed, options)
    lipsync.run(clip, media["speech"], fixed, LipSyncOptions(box=SKETCH_BOX, device="cpu"))
    far = max(range(len(path)), key=lambda i: abs(path[i][0]) + abs(path[i][1]))  # where the face has moved most
    dx, dy = path[far]
    source = face_sketch(dx, dy).astype(int)
    for result, (x_shift, y_shift) in ((followed, (dx, dy)), (fixed, (0, 0))):
        changed = (np.abs(read_video_frames(result)[far].astype(int) - source).max(axis=2) > 24).astype(np.uint8)
        # the redrawn mouth is an area; the drawing's sharp edges, blurred by the encode's colour, are thin lines
        rows, cols = np.nonzero(cv2.morphologyEx(changed, cv2.MORPH_OPEN, np.ones((7, 7), np.uint8)))
        # the redrawn lower face: inside the box as it was placed for that frame, centred on it left to right
        assert rows.min() >= Y1 + y_shift and rows.max() < Y2 + y_shift, result.name
        assert abs(cols.mean() - (X1 + X2) / 2 - x_shift) < 8, result.name
