"""Tests for lipsync.blend: the feather mask and pasting generated faces into frames."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from lipsync.blend import (RISE_START, changed_box, feather_weights, feather_mask, first_row_read,
                           first_weighted_row, paste)

RNG = np.random.default_rng(0)
FRAME = RNG.integers(0, 256, (120, 160, 3), np.uint8)
MOUTH = RNG.integers(0, 256, (96, 96, 3), np.uint8)
BOX = (40, 20, 110, 100)  # x1, y1, x2, y2: 70 wide, 80 high


def outside(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The image with the box blanked out, to compare everything but the box."""
    x1, y1, x2, y2 = box
    copy = image.copy()
    copy[max(y1, 0):y2, max(x1, 0):x2] = 0
    return copy


def test_feather_mask_shape_range_and_border() -> None:
    mask = feather_mask(200, 180)
    assert mask.shape == (200, 180) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    for edge in (mask[0], mask[-1], mask[:, 0], mask[:, -1]):
        assert np.all(edge == 0.0)
    assert mask[150, 90] > 0.99, "mouth centre is fully generated"
    assert np.all(mask[: int(RISE_START * 199)] == 0.0), "eyes and forehead stay original"


def test_feather_mask_is_smooth() -> None:
    mask = feather_mask(200, 200)
    assert np.abs(np.diff(mask, axis=0)).max() < 0.1
    assert np.abs(np.diff(mask, axis=1)).max() < 0.1


def test_masks_are_cached_and_read_only() -> None:
    first, inverse = feather_weights(80, 70)
    assert feather_weights(80, 70)[0] is first
    np.testing.assert_allclose(first + inverse, 1.0)
    with pytest.raises(ValueError):
        first[0, 0] = 1.0


@pytest.mark.parametrize("mode", ["feather", "box"])
def test_outside_box_is_bit_identical(mode: str) -> None:
    before = FRAME.copy()
    out = paste(FRAME, BOX, MOUTH, mode)
    np.testing.assert_array_equal(FRAME, before, err_msg="input frame must not change")
    np.testing.assert_array_equal(outside(out, BOX), outside(FRAME, BOX))
    assert not np.array_equal(out, FRAME)


def test_box_mode_is_resize_and_assign() -> None:
    x1, y1, x2, y2 = BOX
    expected = FRAME.copy()
    expected[y1:y2, x1:x2] = cv2.resize(MOUTH, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(paste(FRAME, BOX, MOUTH, "box"), expected)


def test_box_sized_mouth_is_not_resized() -> None:
    x1, y1, x2, y2 = BOX
    patch = RNG.integers(0, 256, (y2 - y1, x2 - x1, 3), np.uint8)
    np.testing.assert_array_equal(paste(FRAME, BOX, patch, "box")[y1:y2, x1:x2], patch)


def test_feather_blends_by_the_mask() -> None:
    x1, y1, x2, y2 = BOX
    mask = feather_mask(y2 - y1, x2 - x1)[..., None]
    resized = cv2.resize(MOUTH, (x2 - x1, y2 - y1)).astype(np.float32)
    expected = resized * mask + FRAME[y1:y2, x1:x2].astype(np.float32) * (1 - mask)
    got = paste(FRAME, BOX, MOUTH)[y1:y2, x1:x2]
    assert np.abs(got - expected).max() <= 1.0
    np.testing.assert_array_equal(got[mask[..., 0] == 0], FRAME[y1:y2, x1:x2][mask[..., 0] == 0])


@pytest.mark.parametrize("mode", ["feather", "box"])
def test_paste_never_reads_the_rows_above_first_row_read(mode: str) -> None:
    """The generator skips the rows above first_row_read: whatever they hold, every box size pastes the same
    frame (so a change to the mask's geometry that reads them fails here, not as smears in users' videos)."""
    row = first_row_read(mode)
    assert row == (0 if mode == "box" else 35)
    frame = RNG.integers(0, 256, (720, 720, 3), np.uint8)
    other = MOUTH.copy()
    other[:row] = 255 - other[:row]  # every unread pixel changed, by at least one level
    for height in [*range(8, 200, 7), 95, 96, 97, 191, 192, 193, 288, 480, 700]:
        for width in (height, height // 2 + 5, height + 31):
            box = (3, 5, 3 + width, 5 + height)
            np.testing.assert_array_equal(paste(frame, box, other, mode), paste(frame, box, MOUTH, mode),
                                          err_msg=f"box {width}x{height}")  # fmt: skip
    if row:  # and the bound is tight: two rows more are read (a big box samples row 36 and below)
        other[row : row + 2] = 255 - other[row : row + 2]
        box = (0, 0, 700, 700)
        assert not np.array_equal(paste(frame, box, other, mode), paste(frame, box, MOUTH, mode))


def test_feathered_paste_skips_only_rows_weighted_zero_and_changes_nothing_above_changed_box() -> None:
    """A feathered paste blends from first_weighted_row down, and what it skips is what the whole box's blend
    leaves as it was; the encoder of a still is sent changed_box's rows alone, so nothing above may change."""
    frame = RNG.integers(0, 256, (400, 400, 3), np.uint8)
    for height in [*range(2, 120, 3), 191, 192, 193, 300]:
        for width in (height, height // 2 + 1, height + 31):
            box = (7, 3, 7 + width, 3 + height)
            pasted = paste(frame, box, MOUTH)
            mask, inverse = feather_weights(height, width)
            face = cv2.resize(MOUTH, (width, height), interpolation=cv2.INTER_LINEAR)
            whole = frame.copy()
            whole[3 : 3 + height, 7 : 7 + width] = cv2.blendLinear(face, frame[3 : 3 + height, 7 : 7 + width], mask,
                                                                   inverse)  # fmt: skip
            np.testing.assert_array_equal(pasted, whole, err_msg=f"box {width}x{height}")
            top = changed_box(box, "feather")[1]
            assert changed_box(box, "feather") == (7, top, 7 + width, 3 + height)
            np.testing.assert_array_equal(pasted[:top], frame[:top], err_msg=f"box {width}x{height}")
            first = first_weighted_row(height, width)
            assert not mask[:first].any() and (mask[first].any() or not mask.any())
    assert changed_box(BOX, "box") == BOX
    assert changed_box((40, 20, 110, 100), "feather")[1] == 20 + 31  # 80 rows: the mask rises after row 0.38 * 79


def test_inplace_changes_the_given_frame() -> None:
    frame = FRAME.copy()
    assert paste(frame, BOX, MOUTH, inplace=True) is frame
    np.testing.assert_array_equal(frame, paste(FRAME, BOX, MOUTH))


@pytest.mark.parametrize("mode", ["feather", "box"])
def test_box_at_and_beyond_the_frame_edge(mode: str) -> None:
    whole = (0, 0, 160, 120)
    assert paste(FRAME, whole, MOUTH, mode).shape == FRAME.shape
    # a box hanging over the top-left corner pastes its visible part, as if the frame were larger
    box = (-10, -6, 50, 60)
    canvas = np.zeros((126, 170, 3), np.uint8)
    canvas[6:, 10:] = FRAME
    expected = paste(canvas, (0, 0, 60, 66), MOUTH, mode)[6:, 10:]
    np.testing.assert_array_equal(paste(FRAME, box, MOUTH, mode), expected)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        paste(FRAME, BOX, MOUTH, "poisson")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        paste(FRAME, (50, 20, 50, 100), MOUTH)
    with pytest.raises(ValueError):
        paste(FRAME, BOX, MOUTH.astype(np.float32))


def test_lower_rows_become_whole_faces_for_the_paste() -> None:
    from lipsync.mouth import to_faces, to_pixels

    drawn = RNG.uniform(0, 1, (2, 3, 61, 96)).astype(np.float32)
    faces = to_faces(drawn)
    assert faces.shape == (2, 96, 96, 3) and faces.dtype == np.uint8
    np.testing.assert_array_equal(faces[:, 35:], to_pixels(drawn))
    np.testing.assert_array_equal(faces[:, :35], np.repeat(faces[:, 35:36], 35, axis=1))
    whole = RNG.uniform(0, 1, (1, 3, 96, 96)).astype(np.float32)
    np.testing.assert_array_equal(to_faces(whole), to_pixels(whole))
