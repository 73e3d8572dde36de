"""A still's frames reach the encoder as the region that changes, laid by ffmpeg over the picture converted once:
the video must be exactly the one whole frames give (same packets), and only the region may cross the pipe."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import lipsync
from lipsync import canvas, encoding, video
from lipsync.canvas import Region
from lipsync.options import LipSyncOptions

HAAR = LipSyncOptions(face_detector="haar", device="cpu")


def test_the_region_grows_to_even_pixels_and_stays_in_the_frame():
    assert canvas.changing_region((100, 200, 3), (11, 21, 51, 61)) == Region(10, 20, 42, 42)
    assert canvas.changing_region((100, 200, 3), (-5, -5, 31, 41)) == Region(0, 0, 32, 42)
    assert canvas.changing_region((100, 200, 3), (180, 90, 260, 130)) == Region(180, 90, 20, 10)


def test_whole_frames_are_sent_when_a_region_would_not_help():
    assert canvas.changing_region((101, 200, 3), (10, 10, 40, 40)) is None  # an odd side: yuv420p pads it
    assert canvas.changing_region((100, 200, 3), (0, 0, 180, 90)) is None  # most of the frame
    assert canvas.changing_region((100, 200, 3), (300, 10, 340, 40)) is None  # outside the frame


def test_region_cut_and_shift_address_the_same_pixels():
    frame = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    region = Region(4, 6, 10, 8)
    x1, y1, x2, y2 = region.shift((6, 8, 9, 12))
    assert np.array_equal(region.cut(frame)[y1:y2, x1:x2], frame[8:12, 6:9])


def test_a_still_s_paste_keeps_its_frame_and_gives_the_region_a_whole_frame_paste_changes(tmp_path):
    frame = np.full((100, 200, 3), 40, np.uint8)
    box, mouth = (40, 20, 120, 90), np.full((96, 96, 3), 200, np.uint8)
    board = canvas.for_still(frame, box, "feather", tmp_path)
    assert board is not None and board.region.y > box[1], "a feathered paste leaves the upper face: not sent"
    assert board.picture.read_bytes() == frame.tobytes() and canvas.for_still(frame, None, "feather", tmp_path) is None
    whole = canvas.paster(None, "feather", copy=True)(frame, box, mouth)
    part = canvas.paster(board, "feather", copy=True)(frame, box, mouth)
    assert (frame == 40).all(), "a still's one frame serves every output frame: pastes go into copies"
    assert whole.shape == frame.shape and part.shape == (board.region.height, board.region.width, 3)
    assert np.array_equal(part, board.region.cut(whole)) and (whole != 40).any(), "the region: the paste's change"
    assert (whole[: board.region.y] == 40).all(), "nothing above the region moves"
    own = frame.copy()
    assert canvas.paster(None, "feather", copy=False)(own, box, mouth) is own, "a video's own frame: pasted in place"


def _picture(height: int = 64, width: int = 96) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _parts(picture: np.ndarray, region: Region, count: int) -> list:
    """Changed regions: the picture's own pixels, each brightened by its number (like a moving mouth)."""
    base = region.cut(picture).astype(np.int16)
    return [np.clip(base + 3 * i, 0, 255).astype(np.uint8) for i in range(count)]


def _encode(tmp: Path, name: str, picture: np.ndarray, frames: list, fps: float, speech: Path | None,
            board: canvas.Canvas | None) -> Path:  # fmt: skip
    out = tmp / name
    height, width = picture.shape[:2]
    seconds = len(frames) / fps + 0.3 if speech is not None else None  # the last frame held 0.3 s
    with encoding.VideoWriter(out, size=(width, height), fps=fps, audio=speech, temp_dir=tmp, audio_seconds=seconds,
                              still=True, canvas=board) as writer:  # fmt: skip
        for frame in frames:
            writer.write(frame)
    return out


def _decoded(path: Path) -> list:
    return [frame.tobytes() for frame in video.read_frames(path, video.probe(path))]


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001])
@pytest.mark.parametrize("with_audio", [True, False])
def test_a_canvas_encodes_exactly_what_whole_frames_encode(tmp_path, media, fps, with_audio):
    picture = _picture()
    region = canvas.changing_region(picture.shape, (30, 20, 61, 51))
    assert region is not None
    parts = _parts(picture, region, 80)  # past frame 29, where a rounding of timestamps once paired frames wrongly
    whole = []
    for part in parts:
        frame = picture.copy()
        region.cut(frame)[...] = part
        whole.append(frame)
    speech = media["speech"] if with_audio else None
    board = canvas.save(picture, region, tmp_path)
    laid = _encode(tmp_path, "canvas.mp4", picture, parts, fps, speech, board)
    sent = _encode(tmp_path, "whole.mp4", picture, whole, fps, speech, None)
    decoded = _decoded(laid)
    assert len(decoded) >= 60 and decoded == _decoded(sent)


def test_the_canvas_writer_takes_only_the_region(tmp_path):
    picture = _picture()
    region = Region(30, 20, 32, 32)
    board = canvas.save(picture, region, tmp_path)
    with pytest.raises(ValueError, match="expects"):
        with encoding.VideoWriter(tmp_path / "o.mp4", size=(96, 64), fps=25, audio=None, temp_dir=tmp_path,
                                  canvas=board) as writer:  # fmt: skip
            writer.write(picture)


def test_a_picture_job_sends_its_face_region_and_makes_the_same_video(media, tmp_path, monkeypatch):
    shapes = []
    write = encoding.VideoWriter.write
    monkeypatch.setattr(encoding.VideoWriter, "write",
                        lambda self, frame: shapes.append(frame.shape) or write(self, frame))  # fmt: skip
    eng = lipsync.Engine()
    laid = tmp_path / "canvas.mp4"
    lipsync.run(media["photo"], media["speech"], laid, HAAR, engine=eng)
    height, width = cv2.imread(str(media["photo"])).shape[:2]
    assert shapes and all(shape[0] * shape[1] <= canvas.MAX_SHARE * height * width for shape in shapes)
    monkeypatch.setattr(canvas, "MAX_SHARE", 0.0)  # whole frames, as before
    shapes.clear()
    sent = tmp_path / "whole.mp4"
    lipsync.run(media["photo"], media["speech"], sent, HAAR, engine=eng)
    assert set(shapes) == {(height, width, 3)}
    assert _decoded(laid) == _decoded(sent)
