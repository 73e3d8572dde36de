"""Geometry checked from the probed size before any network runs: resize, rotation, crop, fit, box and pads."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lipsync import geometry, video
from lipsync.errors import LipSyncError
from lipsync.options import LipSyncOptions


def _info(width: int, height: int) -> video.MediaInfo:
    return video.MediaInfo(Path("clip.mp4"), False, width, height, 25.0, 50, 2.0, True, True)


def test_frame_size_follows_resize_rotation_crop_and_fit():
    assert geometry.frame_size(_info(1280, 720), LipSyncOptions()) == (1280, 720)
    assert geometry.frame_size(_info(1280, 720), LipSyncOptions(resize_factor=2, rotate=True)) == (360, 640)
    crop = LipSyncOptions(resize_factor=2, rotate=True, crop=(100, -1, 40, 300))
    assert geometry.frame_size(_info(1280, 720), crop) == (260, 540)
    assert geometry.frame_size(_info(8000, 8000), LipSyncOptions()) == video.fitted_size(8000, 8000)


def test_pixel_aspect_turns_with_rotate_only():
    anamorphic = replace(_info(720, 576), pixel_aspect=Fraction(64, 45))
    assert geometry.pixel_aspect(anamorphic, LipSyncOptions()) == Fraction(64, 45)
    kept = LipSyncOptions(resize_factor=2, crop=(0, 200, 10, 300))
    assert geometry.pixel_aspect(anamorphic, kept) == Fraction(64, 45)
    assert geometry.pixel_aspect(anamorphic, LipSyncOptions(rotate=True)) == Fraction(45, 64)
    assert geometry.pixel_aspect(_info(720, 576), LipSyncOptions(rotate=True)) == 1


def test_frame_size_agrees_with_what_transform_makes_of_a_frame():
    frame = np.zeros((720, 1280, 3), np.uint8)
    for options in (LipSyncOptions(resize_factor=3), LipSyncOptions(rotate=True, crop=(10, 500, 0, -1)),
                    LipSyncOptions(resize_factor=2, crop=(0, -1, 33, 201))):  # fmt: skip
        made = video.transform(frame, options.resize_factor, options.rotate, options.crop)
        assert geometry.frame_size(_info(1280, 720), options) == (made.shape[1], made.shape[0])


@pytest.mark.parametrize(
    "options, said",
    [
        (LipSyncOptions(resize_factor=100), "--resize_factor 100 shrinks the 1280×720 px frames of clip.mp4"),
        (LipSyncOptions(resize_factor=2, crop=(400, -1, 0, -1)), "--crop 400 -1 0 -1 does not fit the 640×360 px"),
        (LipSyncOptions(rotate=True, crop=(0, -1, 900, -1)), "y1 must be below 1280 and x1 below 720"),
        (LipSyncOptions(crop=(100, 50, 0, -1)), "it is empty or inverted"),
        (LipSyncOptions(crop=(0, 20, 0, -1)), "leaves 1280×20 px of the 1280×720 frame: too small"),
        (LipSyncOptions(box=(719, 800, 0, 100)), "--box 719 800 0 100 lies outside the 1280×720 px frame"),
        (LipSyncOptions(resize_factor=2, box=(400, 500, 0, 100)), "lies outside the 640×360 px frame"),
        (LipSyncOptions(pads=(-400, -400, 0, 0)), "--pads -400 -400 0 0 take away more than the whole"),
    ],
)
def test_impossible_geometry_is_said_before_any_work(options, said):
    with pytest.raises(LipSyncError, match=_literal(said)):
        geometry.frame_size(_info(1280, 720), options)


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_padded_boxes_that_are_empty_or_inverted_are_the_users_to_fix():
    found = np.array([[100, 100, 200, 220], [110, 100, 210, 220]])
    good = found + np.array([0, -5, 0, 10])
    geometry.check_padded(found, good, (5, 10, 0, 0), "clip.mp4")
    inverted = found.copy()
    inverted[1, 3] = 90  # the bottom pad pulled the lower edge above the top
    with pytest.raises(LipSyncError, match=_literal("--pads 0 -130 0 0 leave nothing of the face box y 100..220, "
                                                    "x 110..210 in frame 1 of clip.mp4")):
        geometry.check_padded(found, inverted, (0, -130, 0, 0), "clip.mp4")
