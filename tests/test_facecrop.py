"""Face enhancement's frame side (lipsync.facecrop): the square full-resolution crop GPEN sees, its colour order
(RGB, as GPEN was trained), and that only the feathered lower-face mask of the redrawn box changes."""

from __future__ import annotations

import numpy as np

from lipsync import facecrop
from lipsync.blend import feather_mask

FRAME_H, FRAME_W = 240, 320
BOX = (120, 60, 200, 160)  # x1, y1, x2, y2: 80 wide, 100 high
SIZE = 64  # a small GPEN's side


def _frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)


def test_the_crop_is_a_square_centred_on_the_box_grown_to_hold_the_whole_face():
    where = facecrop.plan(BOX, FRAME_H, FRAME_W)
    x1, y1, x2, y2 = facecrop.crop_box(where)
    assert x2 - x1 == y2 - y1 == round(100 * facecrop.CROP_GROWTH)
    assert abs((x1 + x2) / 2 - 160) <= 0.5 and abs((y1 + y2) / 2 - 110) <= 0.5
    assert x1 < BOX[0] and y1 < BOX[1] and x2 > BOX[2] and y2 > BOX[3]
    assert facecrop.plan(BOX, FRAME_H, FRAME_W) is where, "a still's plan is computed once"


def test_a_crop_past_the_frame_edge_is_mirrored_and_keeps_the_frame_pixels_inside():
    frame = _frame()
    where = facecrop.plan((0, 150, 90, 240), FRAME_H, FRAME_W)  # a face in the bottom-left corner
    square = facecrop.crop(frame, where)
    assert square.shape == (where.side, where.side, 3)
    dx, top = -where.left, where.top  # the crop reaches dx px past the left edge and past the bottom
    rows = FRAME_H - top
    assert dx > 0 and top >= 0 and top + where.side > FRAME_H
    np.testing.assert_array_equal(square[:rows, dx:], frame[top:, : where.side - dx])
    np.testing.assert_array_equal(square[:, dx - 1], square[:, dx + 1])  # reflect-101 about the first column
    np.testing.assert_array_equal(square[rows], square[rows - 2])  # and about the last row


def test_the_network_gets_rgb_in_minus_one_to_one_nchw():
    frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    frame[..., 2] = 255  # pure red, in OpenCV's BGR order
    batch = facecrop.network_input([frame], [facecrop.plan(BOX, FRAME_H, FRAME_W)], SIZE)
    assert batch.shape == (1, 3, SIZE, SIZE) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, 0], 1.0)  # channel 0 is red: a BGR input would put -1 here
    np.testing.assert_allclose(batch[0, 1:], -1.0)


def test_the_networks_rgb_output_comes_back_as_bgr_pixels():
    output = np.full((1, 3, SIZE, SIZE), -1.0, np.float32)
    output[:, 0] = 1.0  # red
    (face,) = facecrop.network_faces(output)
    assert face.shape == (SIZE, SIZE, 3) and face.dtype == np.uint8
    assert (face[..., 2] == 255).all() and (face[..., :2] == 0).all()


def test_only_the_feathered_lower_face_changes():
    frame = _frame(1)
    original = frame.copy()
    where = facecrop.plan(BOX, FRAME_H, FRAME_W)
    facecrop.put_back(frame, where, np.full((SIZE, SIZE, 3), 255, np.uint8))
    x1, y1, x2, y2 = BOX
    weights = np.zeros((FRAME_H, FRAME_W), np.float32)
    weights[y1:y2, x1:x2] = feather_mask(y2 - y1, x2 - x1)
    changed = (frame != original).any(axis=2)
    assert changed.any() and not changed[weights == 0].any(), "outside the mask every pixel is the original's"
    assert (frame[weights == 1] == 255).all(), "inside the mask's plateau the enhanced face replaces the frame"
    assert not changed[: y1 + int(0.38 * (y2 - y1))].any(), "eyes, hair and background above the nose stay"


def test_enhance_frames_round_trips_an_identity_network_within_resampling_error():
    frame = np.full((FRAME_H, FRAME_W, 3), (40, 120, 200), np.uint8)
    original = frame.copy()
    seen = []

    def identity(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return batch

    facecrop.enhance_frames([frame], [BOX], SIZE, identity)
    assert seen[0].shape == (1, 3, SIZE, SIZE)
    np.testing.assert_allclose(seen[0][0, :, 0, 0], np.array([200, 120, 40]) / 127.5 - 1, atol=1e-6)
    assert np.abs(frame.astype(int) - original).max() <= 1


def test_the_cpu_time_note_gives_the_estimate_in_minutes_for_a_10_s_job(caplog):
    from lipsync.enhance import cpu_seconds

    with caplog.at_level("WARNING", logger="lipsync.facecrop"):
        facecrop.announce_cpu_time(250, 512, 2)
    (record,) = caplog.records
    minutes = cpu_seconds(250, 512, 2) / 60
    assert record.getMessage().startswith(f"note: face enhancement on the CPU adds about {minutes:.0f} min (250 faces")
