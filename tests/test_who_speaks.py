"""Choosing who speaks (face_index) and frames without the face, on real media through the API and the CLI."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import VIDEO_FPS, read_video_frames
from test_end_to_end import HAAR, run_cli

import lipsync

MOUTH = (slice(150, 220), slice(185, 255))  # the astronaut's lower face (512×512 photo)
CHANGED = 15  # mean |difference| of a regenerated mouth (random weights draw noise)
CODEC_NOISE = 3  # mean |difference| of an untouched region after two H.264 encodings


SHOT_FRAMES = 12  # each shot of the cutaway clip: face, no face, face (1.44 s in all)


def _speak(folder: Path, text: str) -> Path:
    path = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory) -> Path:
    return _speak(tmp_path_factory.mktemp("hi"), "Hi.")  # 0.6 s


@pytest.fixture(scope="module")
def longer_speech(tmp_path_factory) -> Path:
    return _speak(tmp_path_factory.mktemp("friend"), "Hello there, my friend.")  # 1.7 s: a little past the clip


def mouth_change(frame: np.ndarray, original: np.ndarray, left: int) -> float:
    rows, cols = MOUTH
    cols = slice(cols.start + left, cols.stop + left)
    return float(np.abs(frame[rows, cols].astype(int) - original[rows, cols]).mean())


def test_a_thumbnail_shows_an_anamorphic_video_s_face_as_a_player_would(astronaut_bgr):
    """The photo stored 3/4 as wide, its pixels shown 4/3 as wide: the face's thumbnail is the photo's (it was the
    squeezed face, stretched to a square)."""
    from lipsync.picker import thumbnail

    squeezed = cv2.resize(astronaut_bgr, (384, 512), interpolation=cv2.INTER_AREA)
    photo_box, squeezed_box = (177, 60, 270, 177), (133, 60, 202, 177)  # x1, y1, x2, y2: the face in each
    expected = thumbnail(astronaut_bgr, photo_box).astype(int)
    stretched = np.abs(thumbnail(squeezed, squeezed_box, 4 / 3) - expected).mean()
    as_stored = np.abs(thumbnail(squeezed, squeezed_box) - expected).mean()
    assert stretched < 8 and as_stored > 4 * stretched, (stretched, as_stored)  # 5.0 and 41 here


def test_the_picker_numbers_frames_as_a_run_does(astronaut_bgr, tmp_path):
    """An animation at 10 frames/s runs at 25, each frame held: its face, from its third frame (0.2 s), is in the
    run's frame 5, and the picker says 5 (it counted the animation's own frames, its two blank ones stored as one)."""
    from PIL import Image

    blank = Image.new("RGB", (512, 512), (90, 90, 90))
    face = Image.fromarray(astronaut_bgr[..., ::-1])
    gif = tmp_path / "late-face.gif"
    blank.save(gif, save_all=True, append_images=[blank, face, face, face], duration=100, loop=0)
    found = lipsync.find_faces(gif, HAAR)
    assert len(found) == 1 and found[0].frame == 5


@pytest.mark.parametrize("index", [0, 1])
def test_face_index_makes_only_that_face_speak(index, astronaut_bgr, short_speech, tmp_path):
    """The astronaut twice, side by side: face 0 is the left one, face 1 the right one."""
    twice = np.concatenate([astronaut_bgr, astronaut_bgr], axis=1)
    photo = tmp_path / "two.png"
    cv2.imwrite(str(photo), twice)
    found = lipsync.find_faces(photo, HAAR)
    assert [f.index for f in found] == [0, 1] and found[0].box[2] < 512 <= found[1].box[2]
    assert found[1].thumbnail.shape == (96, 96, 3) and found[0].frame == 0
    out = tmp_path / "out.mp4"
    lipsync.run(photo, short_speech, out, replace(HAAR, face_index=index))
    frame = read_video_frames(out)[8]
    speaking, silent = (0, 512) if index == 0 else (512, 0)
    assert mouth_change(frame, twice, speaking) > CHANGED
    assert mouth_change(frame, twice, silent) < CODEC_NOISE


def test_a_face_index_beyond_the_faces_is_one_cli_error_line(media, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = run_cli("--face", str(media["photo"]), "--audio", str(media["speech"]), "--outfile", str(tmp_path / "o.mp4"),
                   "--face_detector", "haar", "--face_index", "1", tmpdir=scratch)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == ("error: face_index 1 asks for the second face from the left, but only 1 face was found in "
                           "the first frame with faces (frame 0); use 0, or leave it out for the most confident "
                           "face\n")


def _cutaway_clip(photo: np.ndarray, path: Path) -> None:
    """The face, a gradient without a face (a cutaway), the face again, SHOT_FRAMES each; H.264, no audio."""
    h, w = photo.shape[:2]
    ramp = np.linspace(40, 200, w, dtype=np.uint8)
    away = np.ascontiguousarray(np.stack([np.tile(ramp, (h, 1))] * 3, axis=2))
    ffmpeg = ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
              "-r", str(VIDEO_FPS), "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-y", f"file:{path}"]
    proc = subprocess.Popen(ffmpeg, stdin=subprocess.PIPE)
    for shot in (photo, away, photo):
        for i in range(SHOT_FRAMES):
            proc.stdin.write(np.roll(shot, i % 4, axis=1).tobytes())  # a little motion
    proc.stdin.close()
    assert proc.wait() == 0


def test_frames_without_the_face_pass_through_unchanged(astronaut_bgr, longer_speech, tmp_path):
    clip = tmp_path / "cutaway.mp4"
    _cutaway_clip(astronaut_bgr, clip)
    out = tmp_path / "out.mp4"
    result = lipsync.run(clip, longer_speech, out, HAAR)
    source, frames = read_video_frames(clip), read_video_frames(out)
    assert len(source) < result.frames < 2 * len(source) - SHOT_FRAMES, "it plays back into the last shot only"
    away = range(SHOT_FRAMES, 2 * SHOT_FRAMES)
    assert f"{len(away)} of {result.frames} frames had no face; they are passed through unchanged" in result.notes
    for i in away:  # where the face was before the cut, and the whole frame
        assert mouth_change(frames[i], source[i], 0) < CODEC_NOISE, i
        assert np.abs(frames[i].astype(int) - source[i]).mean() < CODEC_NOISE, i
    for i in (0, SHOT_FRAMES - 1, 2 * SHOT_FRAMES, 3 * SHOT_FRAMES - 1):
        assert mouth_change(frames[i], source[i], 0) > CHANGED, i
