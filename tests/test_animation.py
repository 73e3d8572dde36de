"""Animated WebP faces: ffmpeg cannot decode them, so Pillow does; they must behave as the same animation does as a
GIF, which ffmpeg reads."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from PIL import Image

from lipsync import animation, video
from lipsync.errors import LipSyncError
from lipsync.job import read_at

SIZE = (64, 48)  # width, height
STEP = 40  # grey level of frame i's mark: STEP * i


def marked(path: Path, durations_ms: list[int], **options) -> Path:
    """An animation whose i-th frame is grey STEP * i all over, each frame shown as long as `durations_ms` says."""
    frames = [Image.new("RGB", SIZE, (STEP * i,) * 3) for i in range(len(durations_ms))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations_ms, loop=0, **options)
    return path


def webp(path: Path, durations_ms: list[int]) -> Path:
    return marked(path, durations_ms, lossless=True)


def marks(path: Path, fps: float) -> list[int]:
    """Which frame of a marked animation each frame read at `fps` shows."""
    info = read_at(video.probe(path), fps)
    return [int(round(frame.mean() / STEP)) for frame in video.read_frames(path, info)]


def test_an_animated_webp_is_a_silent_video_at_its_mean_rate(tmp_path: Path) -> None:
    info = video.probe(webp(tmp_path / "a.webp", [40, 60, 100, 20]))
    assert not info.is_image and info.has_video and not info.has_audio
    assert (info.width, info.height, info.frame_count) == (*SIZE, 4)
    assert info.duration == pytest.approx(0.22)
    assert info.fps == pytest.approx(4 / 0.22)
    assert info.frame_starts == pytest.approx((0.0, 0.04, 0.1, 0.2, 0.22))


def test_frames_that_state_no_duration_show_100_ms_each(tmp_path: Path) -> None:
    info = video.probe(webp(tmp_path / "untimed.webp", [0, 0, 0]))
    assert info.frame_starts == pytest.approx((0.0, 0.1, 0.2, 0.3))
    assert info.fps == pytest.approx(10.0)


def test_still_webps_stay_pictures(tmp_path: Path) -> None:
    still = tmp_path / "still.webp"
    Image.new("RGB", SIZE, (90, 90, 90)).save(still, lossless=True)
    one = webp(tmp_path / "one.webp", [100])
    for path in (still, one):
        info = video.probe(path)
        assert info.is_image and info.frame_starts is None, path.name
    assert animation.describe(tmp_path / "missing.webp") is None


@pytest.mark.parametrize("fps", [25.0, 30.0, 10.0])
def test_frames_are_held_and_dropped_as_ffmpeg_does_for_the_same_gif(tmp_path: Path, fps: float) -> None:
    """The same uneven animation as a GIF (read by ffmpeg and its fps filter) and as a WebP (read by Pillow) gives
    the same frames at any rate, including a rate that drops its short frames."""
    durations = [100, 30, 200, 50, 120]  # GIFs keep hundredths of a second
    gif, animated_webp = marked(tmp_path / "a.gif", durations), webp(tmp_path / "a.webp", durations)
    shown = marks(animated_webp, fps)
    assert shown == marks(gif, fps)
    assert len(shown) == math.ceil(sum(durations) * fps / 1000)  # as long as the animation, rounded up
    assert shown[0] == 0 and shown[-1] == 4


def test_an_animations_frame_times_are_read_once_per_version_of_the_file_decoding_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The app probes one face three times (its limits, its face picker, its run): the frame times are read from
    the frames' headers once, no frame decoded, and read again only when the file changes."""
    path = webp(tmp_path / "a.webp", [100] * 3)
    read, decoded = [], []
    real_read, real_decode = animation._stated_durations, animation._duration
    monkeypatch.setattr(animation, "_stated_durations", lambda *args: read.append(args) or real_read(*args))
    monkeypatch.setattr(animation, "_duration", lambda *args: decoded.append(args[1]) or real_decode(*args))
    assert video.probe(path).frame_count == video.probe(path).frame_count == 3
    assert len(read) == 1 and decoded == []
    webp(path, [100] * 4)
    os.utime(path, ns=(1, 1))  # a new version even where the clock is coarse
    assert video.probe(path).frame_count == 4 and len(read) == 2 and decoded == []


@pytest.mark.parametrize("options", [{"lossless": True}, {"quality": 60}, {"quality": 60, "mode": "RGBA"}])
def test_the_frame_headers_state_the_times_pillow_decodes(tmp_path: Path, options: dict) -> None:
    """Lossless, lossy and lossy with alpha frames (an ALPH chunk in each frame): the 24-bit durations read from
    the headers are those Pillow reports after decoding each frame (0 ms to 70 s)."""
    mode = options.pop("mode", "RGB")
    durations = [40, 1000, 0, 70000, 17]
    frames = [Image.new(mode, SIZE, (STEP * i,) * len(mode)) for i in range(len(durations))]
    path = tmp_path / "a.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, **options)
    with Image.open(path) as image:
        decoded = [animation._duration(image, index, path.name) for index in range(image.n_frames)]
    assert animation._stated_durations(str(path), len(durations)) == decoded == durations


def test_frame_headers_past_the_riffs_stated_end_are_decoded_instead(tmp_path: Path) -> None:
    path = webp(tmp_path / "a.webp", [40, 60, 100])
    data = bytearray(path.read_bytes())
    data[4:8] = (len(data) - 8 - 10).to_bytes(4, "little")  # the RIFF's size now ends inside the last frame
    odd = tmp_path / "odd.webp"
    odd.write_bytes(bytes(data) + b"\0" * 10)
    assert animation._stated_durations(str(odd), 3) is None
    junk = tmp_path / "junk.webp"
    junk.write_bytes(path.read_bytes() + b"JUNK" * 5)  # after the RIFF's end: not read
    assert animation._stated_durations(str(junk), 3) == [40, 60, 100]


def test_the_reader_keeps_no_file_open(tmp_path: Path) -> None:
    path = webp(tmp_path / "a.webp", [100] * 6)
    info = video.probe(path)
    before = len(os.listdir("/proc/self/fd"))
    stopped = video.read_frames(path, info)
    next(stopped), next(stopped)
    stopped.close()
    assert len(list(video.read_frames(path, info))) == 6
    assert len(os.listdir("/proc/self/fd")) == before


def test_frames_are_fresh_arrays(tmp_path: Path) -> None:
    """A held frame is handed out as copies: a consumer drawing on one must not change the next."""
    path = webp(tmp_path / "a.webp", [200, 200])
    frames = video.read_frames(path, read_at(video.probe(path), 25.0))
    first = next(frames)
    first[:] = 255
    assert next(frames).max() == 0
    frames.close()


def test_a_damaged_animation_is_named(tmp_path: Path) -> None:
    path = webp(tmp_path / "a.webp", [100] * 4)
    cut = tmp_path / "cut.webp"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(LipSyncError, match="cut.webp"):
        video.probe(cut)
