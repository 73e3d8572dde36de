"""Tests for lipsync.video: ffmpeg argument builders, probing, frame streaming and caching (writing: test_encoding)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import quadrants
from media_helpers import AUDIO_SECONDS, ODD_SIZE, ffmpeg, ffmpeg_children, hdr_clip, no_garbage_collection, open_fds

from lipsync.encoding import write_args
from lipsync.errors import LipSyncError
from lipsync.ffmpeg import probe_args, rate_arg, tail
from lipsync.video import (
    DEINTERLACE,
    HDR_TO_SDR,
    MAX_FRAME_PIXELS,
    FrameCache,
    FrameReader,
    fit,
    fitted_size,
    pingpong_index,
    probe,
    read_args,
    read_frames,
    read_image,
    tone_maps,
    transform,
    transformed_size,
)

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")

# ---------------------------------------------------------------- builders


def test_builders_are_argument_lists_with_file_prefix() -> None:
    name = "-my clip.ü.v2.final.mp4"
    for args in (probe_args(name), read_args(name, 25.0), write_args(name, width=64, height=48, fps=25,
                                                                      audio="-a b.wav", audio_duration=1.0)):
        assert isinstance(args, list) and all(isinstance(arg, str) for arg in args)
        assert args[0] in ("ffmpeg", "ffprobe")
        assert not any(arg.startswith(("-my", "-a b")) for arg in args), "a dash-leading name became an option"
    assert probe_args(name)[-1] == f"file:{name}"
    assert "file:-a b.wav" in write_args("o.mp4", width=64, height=48, fps=25, audio="-a b.wav")


def test_rate_arg_is_exact() -> None:
    assert rate_arg(25.0) == "25"
    assert rate_arg(30000 / 1001) == "30000/1001"


def test_read_args_stream_bgr_at_constant_rate() -> None:
    args = read_args("clip.mp4", 30000 / 1001)
    joined = " ".join(args)
    assert "-nostdin" in args and "-map 0:v:0" in joined
    assert "fps=30000/1001" in args and "tonemap" not in joined
    hdr = read_args("clip.mp4", 25.0, hdr=True)
    assert hdr[hdr.index("-vf") + 1] == f"{HDR_TO_SDR},fps=25", "tone-mapped, then resampled"
    both = read_args("clip.mp4", 25.0, hdr=True, interlaced=True)
    assert both[both.index("-vf") + 1] == f"{DEINTERLACE},{HDR_TO_SDR},fps=25", "fields woven first, as they were"
    assert "bwdif" not in joined
    assert "-f rawvideo -pix_fmt bgr24 pipe:1" in joined


# ---------------------------------------------------------------- probing and reading videos


def test_probe_and_read_odd_size_video(clips: dict[str, Path]) -> None:
    info = probe(clips["odd"])
    assert (info.width, info.height) == ODD_SIZE and not info.is_image
    assert info.fps == 25.0 and info.frame_count == 50 and info.duration == pytest.approx(2.0)
    assert info.has_video and not info.has_audio and info.rotation == 0
    frames = list(read_frames(clips["odd"], info))
    assert len(frames) == 50
    assert all(frame.shape == (241, 321, 3) and frame.dtype == np.uint8 for frame in frames)
    assert not np.array_equal(frames[0], frames[25]), "testsrc moves; frames must differ"


def test_awkward_file_names(clips: dict[str, Path], tmp_path: Path) -> None:
    awkward = tmp_path / "-my clip.ü.v2.final.mp4"
    shutil.copy(clips["plain"], awkward)
    info = probe(awkward)
    frames = read_frames(awkward, info)
    assert next(frames).shape == (48, 64, 3)
    frames.close()


def test_rotated_phone_video(clips: dict[str, Path], tmp_path: Path) -> None:
    rotated = tmp_path / "portrait.mp4"
    try:  # ffmpeg >= 6
        ffmpeg("-display_rotation", "90", "-i", clips["plain"], "-c", "copy", rotated)
    except subprocess.CalledProcessError:  # ffmpeg 5.x
        ffmpeg("-i", clips["plain"], "-c", "copy", "-metadata:s:v", "rotate=90", rotated)
    info = probe(rotated)
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (48, 64)
    upright = list(read_frames(clips["plain"], probe(clips["plain"])))
    turned = list(read_frames(rotated, info))
    assert len(turned) == len(upright) == 25
    np.testing.assert_array_equal(turned[3], np.rot90(upright[3], info.rotation // 90))


def test_variable_frame_rate_is_resampled_by_time(tmp_path: Path) -> None:
    vfr = tmp_path / "vfr.mp4"
    # brightness encodes each frame's time; 50 fps for 0.4 s, then only every 4th frame (12.5 fps)
    ffmpeg("-f", "lavfi", "-i", "color=black:s=64x48:r=50,format=gray,geq=lum='T*100'", "-t", "2",
           "-vf", "select='lt(n,20)+not(mod(n,4))'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-crf", "0", "-pix_fmt", "yuv420p", vfr)
    info = probe(vfr)
    assert 15 < info.fps < 25, "fps must be the average rate, not the 50 fps timebase"
    frames = list(read_frames(vfr, info))
    assert abs(len(frames) - info.duration * info.fps) <= 1
    seconds = np.array([frame.mean() for frame in frames]) / 100  # brightness -> source frame's time
    expected = np.arange(len(frames)) / info.fps
    assert np.abs(seconds - expected).max() < 0.08 + 1 / info.fps, "frame i must show time i/fps"


@pytest.mark.parametrize("transfer, kind", [("arib-std-b67", "HLG"), ("smpte2084", "HDR10/PQ")])
def test_hdr_video_is_tone_mapped_to_the_sdr_it_shows(tmp_path: Path, astronaut_bgr: np.ndarray, transfer: str,
                                                      kind: str) -> None:  # fmt: skip
    """A phone's HDR video, read as SDR: near the SDR photo it was made from, where read as it is it came out
    dark and grey."""
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), astronaut_bgr)
    clip = hdr_clip(photo, tmp_path, transfer)
    info = probe(clip)
    assert info.hdr == kind and probe(photo).hdr == ""
    with read_frames(clip, info) as frames, read_frames(clip, replace(info, transfer="")) as untouched:
        frame, as_it_is = next(frames).astype(int), next(untouched).astype(int)
    assert np.abs(frame - astronaut_bgr).mean() < 6, "within the roll-off of the brightest parts"
    assert np.abs(as_it_is - astronaut_bgr).mean() > 15
    saturation = [cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_BGR2HSV)[..., 1].mean()
                  for image in (astronaut_bgr, frame, as_it_is)]  # fmt: skip
    assert abs(saturation[1] - saturation[0]) < 0.1 * saturation[0] < saturation[0] - saturation[2]


def test_without_zscale_hdr_is_read_as_it_is_and_the_run_says_so(
    tmp_path: Path, astronaut_bgr: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lipsync import ffmpeg as tools
    from lipsync import pipeline
    from lipsync.options import LipSyncOptions

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), astronaut_bgr)
    info = probe(hdr_clip(photo, tmp_path, "arib-std-b67"))
    assert tools.has_filters("zscale", "tonemap") and not tools.has_filters("zscale", "no-such-filter")
    assert tone_maps(info) and "tone-mapped to SDR" in pipeline._input_notes(info, LipSyncOptions(), info.fps)[0]
    monkeypatch.setattr(tools, "has_filters", lambda *names: False)  # an ffmpeg built without libzimg
    assert not tone_maps(info)
    with read_frames(info.path, info) as frames:
        assert next(frames).shape == astronaut_bgr.shape
    assert "lacks the zscale filter" in pipeline._input_notes(info, LipSyncOptions(), info.fps)[0]


def _combing(frame: np.ndarray) -> float:
    """Mean difference between each even row and the odd row below it: a field apart in a combed frame."""
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(int)
    return float(np.abs(grey[0:-1:2] - grey[1::2]).mean())


def test_interlaced_video_is_read_as_whole_frames(tmp_path: Path, astronaut_bgr: np.ndarray) -> None:
    """A camera panning at 50 fields a second, stored interlaced (25 frames, top field first, lossless): read as
    it is, every frame's rows alternate between two moments (combed); deinterlaced, they are as even as a still's."""
    from lipsync import pipeline
    from lipsync.options import LipSyncOptions

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), astronaut_bgr)
    clip = tmp_path / "interlaced.mp4"
    ffmpeg("-framerate", "50", "-loop", "1", "-i", photo, "-vf",
           "crop=400:400:x='min(n*6,100)':y=0,tinterlace=mode=interleave_top,setfield=tff", "-frames:v", "8",
           "-c:v", "libx264", "-qp", "0", "-x264opts", "tff=1", "-pix_fmt", "yuv444p", clip)  # fmt: skip
    info = probe(clip)
    assert info.interlaced and info.fps == 25 and not probe(photo).interlaced
    with read_frames(clip, info) as frames, read_frames(clip, replace(info, interlaced=False)) as untouched:
        woven, combed = list(frames), list(untouched)
    still = _combing(astronaut_bgr[:400, :400])
    assert len(woven) == len(combed) == 8, "one frame per frame: the rate is kept"
    assert max(map(_combing, woven)) < 1.2 * still < 3 * still < min(map(_combing, combed[:6]))  # 5.7, 23
    assert "is interlaced video: its frames are deinterlaced" in pipeline._input_notes(info, LipSyncOptions(), 25)[0]


def test_early_close_leaves_no_ffmpeg_process(clips: dict[str, Path]) -> None:
    info = probe(clips["odd"])
    frames = read_frames(clips["odd"], info)
    next(frames)
    next(frames)
    assert ffmpeg_children(), "ffmpeg should be running mid-stream"
    frames.close()
    assert ffmpeg_children() == []
    assert next(frames, None) is None, "a closed reader yields nothing more"


@pytest.mark.parametrize("closing", ["with", "contextlib.closing", "close()"])
def test_reader_stopped_early_leaves_no_child_and_no_fd(clips: dict[str, Path], closing: str) -> None:
    info = probe(clips["odd"])
    with no_garbage_collection():
        before = open_fds()
        reader = read_frames(clips["odd"], info)
        assert isinstance(reader, FrameReader) and iter(reader) is reader
        context = {"with": reader, "contextlib.closing": contextlib.closing(reader),
                   "close()": contextlib.nullcontext(reader)}[closing]
        with context as frames:
            assert [next(frames).shape for _ in range(3)] == [(241, 321, 3)] * 3
            assert ffmpeg_children(), "ffmpeg runs mid-stream"
            assert open_fds() != before, "its pipe and stderr file are open"
        if closing == "close()":
            reader.close()
        assert ffmpeg_children() == [] and open_fds() == before
        reader.close()  # idempotent
        assert list(reader) == []


def test_reader_whose_consumer_raises_leaves_no_child_and_no_fd(clips: dict[str, Path]) -> None:
    info = probe(clips["odd"])
    with no_garbage_collection():
        before = open_fds()
        with pytest.raises(RuntimeError, match="model crashed"), read_frames(clips["odd"], info) as frames:
            for index, _ in enumerate(frames):
                if index == 4:
                    raise RuntimeError("model crashed")
        assert ffmpeg_children() == [] and open_fds() == before


def test_reader_read_to_the_end_or_never_started_leaves_nothing(clips: dict[str, Path]) -> None:
    info = probe(clips["plain"])
    with no_garbage_collection():
        before = open_fds()
        reader = read_frames(clips["plain"], info)
        assert ffmpeg_children() == [], "ffmpeg starts at the first frame, not before"
        assert len(list(reader)) == 25 and reader.frames_read == 25
        assert ffmpeg_children() == [] and open_fds() == before, "the last frame closed it"
        read_frames(clips["plain"], info).close()
        assert ffmpeg_children() == [] and open_fds() == before


def test_reader_on_an_undecodable_video_raises_and_leaves_nothing(clips: dict[str, Path], tmp_path: Path) -> None:
    info = probe(clips["plain"])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video\n" * 100)
    with no_garbage_collection():
        before = open_fds()
        with pytest.raises(LipSyncError, match=r"could not decode the video broken\.mp4 \(ffmpeg: .*Invalid data"):
            with read_frames(broken, info) as frames:
                next(frames)
        assert ffmpeg_children() == [] and open_fds() == before


def test_picture_reader_yields_once(tmp_path: Path) -> None:
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), quadrants())
    with read_frames(path, probe(path)) as frames:
        assert [frame.shape for frame in frames] == [(48, 64, 3)]
        assert next(frames, None) is None


def test_audio_files(clips: dict[str, Path]) -> None:
    with pytest.raises(LipSyncError, match="no video stream — the face must be a picture or a video"):
        probe(clips["audio"])
    info = probe(clips["audio"], require_video=False)
    assert not info.has_video and info.has_audio
    assert info.audio_duration == pytest.approx(AUDIO_SECONDS, abs=0.05) and info.audio_sample_rate == 44100
    talk = probe(clips["with_audio"])
    assert talk.has_video and talk.has_audio and talk.audio_sample_rate == 48000


def test_unusable_inputs(tmp_path: Path) -> None:
    with pytest.raises(LipSyncError, match="does not exist"):
        probe(tmp_path / "missing.mp4")
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video at all\n" * 20)
    with pytest.raises(LipSyncError, match=r"notes\.mp4 cannot be read as a picture or a video \(ffmpeg: .*Invalid data"):
        probe(notes)
    with pytest.raises(LipSyncError, match=r"notes\.mp4 cannot be read as an audio or video file"):
        probe(notes, require_video=False)


# ---------------------------------------------------------------- pictures


def read_one(path: Path) -> np.ndarray:
    info = probe(path)
    assert info.is_image and info.frame_count == 1
    frames = list(read_frames(path, info))
    assert len(frames) == 1 and frames[0].dtype == np.uint8 and frames[0].ndim == 3
    assert (info.width, info.height) == (frames[0].shape[1], frames[0].shape[0])
    return frames[0]


@pytest.mark.parametrize("name", ["face.png", "face.PNG", "face.bmp", "face.webp", "face.jpg", "face.JPEG"])
def test_picture_formats(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    image = quadrants()
    data = cv2.imencode(Path(name.lower()).suffix, image, [cv2.IMWRITE_WEBP_QUALITY, 101])[1]
    data.tofile(path)
    error = np.abs(read_one(path).astype(int) - image)
    if "jp" in name.lower():  # lossy, chroma-subsampled at the quadrant edges
        assert error.mean() < 4
    else:
        assert error.max() == 0


def test_picture_detected_by_content_not_extension(tmp_path: Path) -> None:
    png_named_mp4 = tmp_path / "face.mp4"
    cv2.imencode(".png", quadrants())[1].tofile(png_named_mp4)
    np.testing.assert_array_equal(read_one(png_named_mp4), quadrants())


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    image = np.zeros((10, 30, 4), np.uint8)
    image[..., :3] = (0, 0, 255)
    image[:, :10, 3], image[:, 10:20, 3], image[:, 20:, 3] = 0, 128, 255
    path = tmp_path / "cutout.png"
    cv2.imwrite(str(path), image)
    frame = read_one(path)
    np.testing.assert_array_equal(frame[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(frame[0, 15], (127, 127, 255))
    np.testing.assert_array_equal(frame[0, 25], (0, 0, 255))


def test_greyscale_and_16_bit(tmp_path: Path) -> None:
    grey = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (4, 1))
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    frame = read_one(tmp_path / "grey.png")
    assert frame.shape == (4, 50, 3)
    for channel in range(3):
        np.testing.assert_array_equal(frame[..., channel], grey)
    deep = np.tile(np.array([0, 257 * 100, 65535], np.uint16), (4, 1))
    cv2.imwrite(str(tmp_path / "deep.png"), np.dstack([deep] * 3))
    np.testing.assert_array_equal(read_one(tmp_path / "deep.png")[0, :, 0], [0, 100, 255])


def test_exif_orientation_and_cmyk(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    stored = quadrants()
    picture = pil.fromarray(stored[..., ::-1].copy())
    exif = picture.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    picture.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    frame = read_one(tmp_path / "phone.jpg")
    assert frame.shape == (64, 48, 3)
    assert np.abs(frame.astype(int) - cv2.rotate(stored, cv2.ROTATE_90_CLOCKWISE)).mean() < 4
    picture.convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    assert np.abs(read_one(tmp_path / "print.jpg").astype(int) - stored).mean() < 4


@pytest.mark.parametrize("suffix", [".png", ".webp"])
def test_exif_orientation_of_transparent_pictures(tmp_path: Path, suffix: str) -> None:
    """OpenCV ignores EXIF when it keeps alpha; all eight orientations must still match PIL's reading."""
    pil = pytest.importorskip("PIL.Image")
    ops = pytest.importorskip("PIL.ImageOps")
    rgba = np.random.default_rng(2).integers(0, 256, (6, 9, 4), np.uint8)
    rgba[:, :4, 3] = 255  # opaque left part, transparent right part: a turned alpha shows
    rgba[:, 4:, 3] = 0
    for orientation in range(1, 9):
        picture = pil.fromarray(rgba, "RGBA")
        exif = picture.getexif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}{suffix}"
        picture.save(path, exif=exif, lossless=True)
        upright = np.asarray(ops.exif_transpose(pil.open(path))).astype(np.float32)
        on_white = upright[..., :3] * upright[..., 3:] / 255 + 255 * (1 - upright[..., 3:] / 255)
        np.testing.assert_array_equal(read_one(path), np.rint(on_white[..., ::-1]).astype(np.uint8),
                                      err_msg=f"orientation {orientation}")


def test_picture_opencv_cannot_read_falls_back_to_ffmpeg(tmp_path: Path) -> None:
    for name in ("face.tga", "face.png"):
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v", "1", tmp_path / name)
    assert cv2.imread(str(tmp_path / "face.tga")) is None
    np.testing.assert_array_equal(read_one(tmp_path / "face.tga"), read_image(tmp_path / "face.png"))


def test_huge_picture(tmp_path: Path) -> None:
    path = tmp_path / "poster.jpg"
    cv2.imwrite(str(path), np.full((8000, 8000, 3), 90, np.uint8))
    assert read_one(path).shape == (8000, 8000, 3)


def test_frames_larger_than_players_decode_are_scaled_down() -> None:
    assert fitted_size(1920, 1080) == (1920, 1080) and fitted_size(3840, 2160) == (3840, 2160)
    width, height = fitted_size(8000, 8000)
    assert width == height and width * height <= MAX_FRAME_PIXELS and width > 2800
    assert fitted_size(9000, 1000) == (4096, 455), "the longest side is capped too"
    frame = np.zeros((6000, 8000, 3), np.uint8)
    assert fit(frame).shape[:2][::-1] == fitted_size(8000, 6000)
    small = np.zeros((720, 1280, 3), np.uint8)
    assert fit(small) is small


def test_ffmpeg_errors_are_quoted_on_one_line() -> None:
    said = b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55c52bf07180] moov atom not found\nfile:/tmp/a b/x.mp4: Invalid data\n"
    assert tail(said) == "moov atom not found | Invalid data"
    assert tail(b"") == "ffmpeg printed no error"
    assert tail(b"file:/tmp/a:b/x.mp4: Invalid data\n", "/tmp/a:b/x.mp4") == "Invalid data", "a name with a colon"


# ---------------------------------------------------------------- per-frame edits, cache, ping-pong


def test_transform_order_resize_rotate_crop() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (60, 100, 3), np.uint8)
    assert transform(frame) is frame
    small = cv2.resize(frame, (50, 30))
    np.testing.assert_array_equal(transform(frame, resize_factor=2), small)
    turned = cv2.rotate(small, cv2.ROTATE_90_CLOCKWISE)  # 50 high, 30 wide
    np.testing.assert_array_equal(transform(frame, 2, True), turned)
    np.testing.assert_array_equal(transform(frame, 2, True, (5, -1, 10, 20)), turned[5:, 10:20])
    with pytest.raises(LipSyncError, match="crop"):
        transform(frame, crop=(70, -1, 0, -1))


def test_a_resize_factor_that_leaves_nothing_is_a_clear_error() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(LipSyncError, match="resize_factor 1000 shrinks the 640×480 frame to nothing; 480 is the largest"):
        transform(frame, resize_factor=1000)
    assert transform(frame, resize_factor=480).shape == (1, 1, 3)
    with pytest.raises(LipSyncError, match="resize_factor 481"):
        transformed_size(640, 480, 481)


def test_a_crop_outside_the_frame_is_a_clear_error() -> None:
    frame = np.zeros((60, 100, 3), np.uint8)
    with pytest.raises(LipSyncError, match=r"--crop \(0, 61, 0, -1\) reaches past the 100×60 frame"):
        transform(frame, crop=(0, 61, 0, -1))
    with pytest.raises(LipSyncError, match=r"reaches past the 60×100 frame"):
        transform(frame, rotate=True, crop=(0, -1, 0, 61))  # rotated: 60 wide
    with pytest.raises(LipSyncError, match="leaves nothing"):
        transform(frame, crop=(30, 30, 0, -1))


SIZE_CASES = [  # width, height, resize_factor, rotate, crop
    (100, 60, 1, False, (0, -1, 0, -1)),
    (321, 241, 2, False, (0, -1, 0, -1)),
    (321, 241, 3, True, (5, -1, 10, 20)),
    (641, 479, 4, True, (0, 100, 0, -1)),
    (99, 77, 1, True, (-4, 50, -9, -1)),  # negative starts mean the first row/column
    (7, 5, 5, False, (0, -1, 0, -1)),
    (1, 1, 1, True, (0, 1, 0, 1)),
    (5000, 3000, 1, False, (0, -1, 0, -1)),  # larger than players decode: fit() scales it down
    (9001, 1001, 2, True, (1, -1, 0, 500)),
    (60, 100, 1, False, (0, 101, 0, -1)),  # errors must agree too
    (60, 100, 61, False, (0, -1, 0, -1)),
    (60, 100, 1, True, (0, -1, 50, 40)),
]


@pytest.mark.parametrize("width,height,factor,rotate,crop", SIZE_CASES)
def test_transformed_size_is_what_transform_makes(width: int, height: int, factor: int, rotate: bool,
                                                  crop: tuple[int, int, int, int]) -> None:
    frame = np.random.default_rng(width).integers(0, 256, (height, width, 3), np.uint8)
    try:
        made = transform(frame, factor, rotate, crop)
    except LipSyncError as error:
        with pytest.raises(LipSyncError) as predicted:
            transformed_size(width, height, factor, rotate, crop)
        assert str(predicted.value) == str(error)
        return
    assert transformed_size(width, height, factor, rotate, crop) == (made.shape[1], made.shape[0])
    assert fitted_size(*transformed_size(width, height, factor, rotate, crop)) == fit(made).shape[1::-1]
    assert made.flags.c_contiguous


def test_frame_cache_round_trip(tmp_path: Path) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (6, 8, 10, 3), np.uint8)
    with FrameCache(tmp_path) as cache:
        for frame in frames[:4]:
            cache.append(frame)
        np.testing.assert_array_equal(cache[3], frames[3])
        for frame in frames[4:]:
            cache.append(frame[:, ::-1][:, ::-1])  # non-contiguous views are fine
        assert len(cache) == 6 and cache.nbytes == frames.nbytes
        for index in (5, 0, 2, -1):
            np.testing.assert_array_equal(cache[index], frames[index])
        cache[0][:] = 0  # a copy: the cache is not changed through it
        np.testing.assert_array_equal(cache[0], frames[0])
        with pytest.raises(IndexError):
            cache[6]
        with pytest.raises(ValueError):
            cache.append(frames[0][:4])
        stored = cache.path
        assert stored.parent == tmp_path
    assert not stored.exists()


def test_pingpong_index() -> None:
    assert [pingpong_index(i, 4) for i in range(11)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert [pingpong_index(i, 2) for i in range(5)] == [0, 1, 0, 1, 0]
    assert [pingpong_index(i, 1) for i in range(3)] == [0, 0, 0]
    sequence = [pingpong_index(i, 7) for i in range(50)]
    assert all(a != b for a, b in zip(sequence, sequence[1:])), "no frame repeats at the turn"
    with pytest.raises(ValueError):
        pingpong_index(0, 0)
