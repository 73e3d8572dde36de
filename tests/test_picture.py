"""Tests for lipsync.picture: Pillow decoding (EXIF orientation, alpha, depths, colour models), ffmpeg for the rest."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lipsync import native, picture, video
from conftest import quadrants

from lipsync.errors import LipSyncError

ORIENTATION_TAG = 0x0112
# How a picture stored as `a` is displayed for each EXIF orientation (the EXIF specification's table).
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
LOSSY = ("JPEG", "AVIF")
JPEG_MEAN_ERROR = 4  # quality 95, chroma subsampled at the quadrant edges


def save(image: Image.Image, path: Path, orientation: int | None = None, **options) -> Path:
    if orientation is not None:
        exif = image.getexif()
        exif[ORIENTATION_TAG] = orientation
        options["exif"] = exif
    image.save(path, **options)
    return path


def assert_close(got: np.ndarray, expected_rgb: np.ndarray, lossy: bool) -> None:
    assert got.dtype == np.uint8 and got.shape == expected_rgb.shape
    error = np.abs(got.astype(int) - expected_rgb[..., ::-1])
    assert (error.mean() < JPEG_MEAN_ERROR) if lossy else (error.max() == 0)


# ---------------------------------------------------------------- orientation


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("TIFF", ".tif"),
                                        ("AVIF", ".avif")])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation(tmp_path: Path, fmt: str, suffix: str, orientation: int) -> None:
    stored = quadrants()
    extra = {"quality": 95} if fmt in ("JPEG", "AVIF") else {"lossless": True} if fmt == "WEBP" else {}
    path = save(Image.fromarray(stored), tmp_path / f"o{orientation}{suffix}", orientation, **extra)
    expected = DISPLAYED[orientation](stored)
    assert_close(picture.read_image(path), expected, fmt in LOSSY)
    info = video.probe(path)
    assert info.is_image and (info.width, info.height) == (expected.shape[1], expected.shape[0])


def test_unreadable_orientation_keeps_the_picture_as_stored(tmp_path: Path) -> None:
    path = save(Image.fromarray(quadrants()), tmp_path / "odd.png", orientation=99)
    assert_close(picture.read_image(path), quadrants(), lossy=False)


# ---------------------------------------------------------------- alpha on white


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    weight = alpha.astype(np.float64)[..., None] / 255
    return np.rint(rgb * weight + 255 * (1 - weight)).astype(np.uint8)


def test_rgba_and_la_are_composited_on_white(tmp_path: Path) -> None:
    rgb = np.broadcast_to(np.array([200, 30, 60], np.uint8), (4, 3, 3)).copy()
    alpha = np.array([[0, 128, 255]] * 4, np.uint8)
    for suffix in (".png", ".webp", ".tif"):
        path = save(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), tmp_path / f"cut{suffix}", lossless=True)
        assert_close(picture.read_image(path), on_white(rgb, alpha), lossy=False)
    grey = np.full((4, 3), 90, np.uint8)
    path = save(Image.fromarray(np.dstack([grey, alpha]), "LA"), tmp_path / "grey_alpha.png")
    assert_close(picture.read_image(path), on_white(np.dstack([grey] * 3), alpha), lossy=False)


def test_palette_with_a_transparent_colour_goes_on_white(tmp_path: Path) -> None:
    indices = np.array([[0, 1], [1, 0]], np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette([10, 20, 30, 250, 0, 0] + [0] * 762)
    path = save(image, tmp_path / "palette.png", transparency=0)
    expected = np.array([[[255, 255, 255], [250, 0, 0]], [[250, 0, 0], [255, 255, 255]]], np.uint8)
    assert_close(picture.read_image(path), expected, lossy=False)


# ---------------------------------------------------------------- colour profiles


def _p3_in_srgb(rgb: np.ndarray) -> np.ndarray:
    """What Display P3 colours (with media_helpers' gamma of 2.2) are in sRGB, by the arithmetic of ICC matrices:
    to linear light, to the D50 connection space, into sRGB's linear light (its D50 colorants), sRGB's curve."""
    from media_helpers import DISPLAY_P3_D50, ICC_GAMMA

    srgb_d50 = np.array([(0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)]).T
    linear = np.linalg.solve(srgb_d50, np.array(DISPLAY_P3_D50).T @ (rgb.reshape(-1, 3).T / 255.0) ** ICC_GAMMA)
    linear = np.clip(linear.T, 0, 1)
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.rint(encoded * 255).reshape(rgb.shape).astype(np.uint8)


def test_a_display_p3_picture_is_read_in_srgb(tmp_path: Path) -> None:
    """An iPhone photo or a Mac screenshot is Display P3: its colours are converted to sRGB (taken as sRGB they came
    out duller than the browser shows them: P3's (200, 100, 80) is sRGB's (216, 93, 72)); transparency is kept."""
    from media_helpers import rgb_icc_profile

    p3 = rgb_icc_profile("Display P3")
    rgb = np.array([[[200, 100, 80], [40, 160, 90], [128, 128, 128], [30, 60, 220]]], np.uint8)
    path = save(Image.fromarray(rgb), tmp_path / "p3.png", icc_profile=p3)
    expected = _p3_in_srgb(rgb)
    assert np.abs(picture.read_image(path)[..., ::-1].astype(int) - expected).max() <= 1
    assert np.abs(expected.astype(int) - rgb).max() > 10, "a change the eye sees"
    alpha = np.array([[255, 128, 0, 255]], np.uint8)
    cut = save(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), tmp_path / "p3-cut.png", icc_profile=p3)
    composited = picture.read_image(cut)[..., ::-1].astype(int)
    assert np.abs(composited - on_white(expected, alpha)).max() <= 1


def test_srgb_and_unusable_profiles_leave_the_pixels_as_stored(tmp_path: Path) -> None:
    from PIL import ImageCms

    rgb = np.array([[[200, 100, 80], [40, 160, 90]]], np.uint8)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for name, profile in (("srgb", srgb), ("damaged", b"not a profile at all")):
        path = save(Image.fromarray(rgb), tmp_path / f"{name}.png", icc_profile=profile)
        assert np.array_equal(picture.read_image(path)[..., ::-1], rgb), name


# ---------------------------------------------------------------- depths and colour models


def test_greyscale_and_one_bit(tmp_path: Path) -> None:
    grey = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (4, 1))
    path = save(Image.fromarray(grey, "L"), tmp_path / "grey.png")
    assert_close(picture.read_image(path), np.dstack([grey] * 3), lossy=False)
    bits = np.array([[0, 1, 1], [1, 0, 0]], bool)
    path = save(Image.fromarray(bits).convert("1"), tmp_path / "bits.png")
    assert_close(picture.read_image(path), np.dstack([bits.astype(np.uint8) * 255] * 3), lossy=False)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_is_scaled(tmp_path: Path, suffix: str) -> None:
    deep = np.tile(np.array([0, 257 * 100, 65535, 32768], np.uint16), (3, 1))
    image = Image.fromarray(deep)  # mode I;16
    assert image.mode.startswith("I;16")
    path = save(image, tmp_path / f"deep{suffix}")
    expected = np.rint(deep / 65535 * 255).astype(np.uint8)
    assert_close(picture.read_image(path), np.dstack([expected] * 3), lossy=False)


def test_32_bit_integer_and_float_pictures(tmp_path: Path) -> None:
    wide = np.array([[0, 25700, 65535, 70000, -5]], np.int32)
    path = save(Image.fromarray(wide, "I"), tmp_path / "wide.tif")
    np.testing.assert_array_equal(picture.read_image(path)[0, :, 0], [0, 100, 255, 255, 0])
    unit = np.array([[0.0, 0.5, 1.0, 2.0, -1.0]], np.float32)
    path = save(Image.fromarray(unit, "F"), tmp_path / "float.tif")
    np.testing.assert_array_equal(picture.read_image(path)[0, :, 1], [0, 128, 255, 255, 0])


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk(tmp_path: Path, suffix: str) -> None:
    stored = quadrants()
    path = save(Image.fromarray(stored).convert("CMYK"), tmp_path / f"print{suffix}", quality=95)
    assert_close(picture.read_image(path), stored, lossy=suffix == ".jpg")


# ---------------------------------------------------------------- damaged files, other formats, limits


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_truncated_picture(tmp_path: Path, suffix: str, capfd: pytest.CaptureFixture[str]) -> None:
    whole = save(Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), np.uint8)),
                 tmp_path / f"whole{suffix}")
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    assert picture.read_picture(cut) is None
    with pytest.raises(LipSyncError, match=f"could not decode the picture {cut}"):
        picture.read_image(cut)
    with pytest.raises(LipSyncError, match=rf"could not decode the picture cut\{suffix}; is the file complete\?"):
        video.probe(cut)
    assert capfd.readouterr().err == "", "the decoder says nothing on stderr: our error says it"


def test_pictures_need_no_stderr_redirection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("pictures must not redirect file descriptor 2")

    monkeypatch.setattr(native, "held_back", refuse)
    path = save(Image.fromarray(quadrants()), tmp_path / "face.png")
    assert_close(picture.read_image(path), quadrants(), lossy=False)
    (tmp_path / "cut.png").write_bytes(path.read_bytes()[:60])
    assert picture.read_picture(tmp_path / "cut.png") is None


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_formats_pillow_cannot_open_go_through_ffmpeg(tmp_path: Path) -> None:
    for name in ("face.xwd", "face.png"):
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48",
                        "-frames:v", "1", str(tmp_path / name)], check=True)
    with pytest.raises(OSError):
        Image.open(tmp_path / "face.xwd")
    np.testing.assert_array_equal(picture.read_image(tmp_path / "face.xwd"), picture.read_image(tmp_path / "face.png"))
    info = video.probe(tmp_path / "face.xwd")
    assert info.is_image and (info.width, info.height) == (64, 48)


def _heic(tmp_path: Path) -> Path:
    picture.register_plugins()  # pillow-heif saves it: lipsync loads the plugin on first need
    return save(Image.fromarray(quadrants()), tmp_path / "photo.HEIC", quality=95)


def test_a_heic_photo_is_a_picture_before_ffmpeg_is_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """iPhones' photos: ffmpeg 5.1 reads none, and a later ffmpeg would show one tile of one as a video. (Their
    rotation is HEIF's own, which libheif applies; pillow-heif then sets the EXIF orientation to 1.)"""
    path = _heic(tmp_path)
    asked = _counting_ffprobe(monkeypatch)
    info = video.probe(path)
    assert info.is_image and (info.width, info.height) == (64, 48) and not asked
    assert_close(info.picture, quadrants(), lossy=True)
    assert picture.is_heif(path) and not picture.is_heif(save(Image.fromarray(quadrants()), tmp_path / "a.png"))


def test_a_heic_photo_that_cannot_be_read_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _heic(tmp_path)
    cut = tmp_path / "cut.heic"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(LipSyncError, match="could not decode the HEIC photo cut.heic; is the file complete"):
        video.probe(cut)
    without_plugin = tuple(name for name in picture._pillow_formats() if name != "HEIF")
    monkeypatch.setattr(picture, "_pillow_formats", lambda: without_plugin)
    with pytest.raises(LipSyncError, match="photo.HEIC is a HEIC photo, and reading one needs the pillow-heif"):
        video.probe(path)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header states width x height (its pixel data is a single row)."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b"")


def test_a_picture_too_large_to_decode_safely_says_so(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(30_000, 30_000))
    with pytest.raises(LipSyncError, match="the picture bomb.png is too large to decode"):
        picture.read_image(path)


def test_ffmpeg_picture_command_keeps_names_as_files() -> None:
    args = picture.picture_args("-face:1.tga")
    assert args[:5] == ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]
    assert "file:-face:1.tga" in args and args[-1] == "pipe:1"


# ---------------------------------------------------------------- probing without ffprobe


def _counting_ffprobe(monkeypatch: pytest.MonkeyPatch) -> list:
    from lipsync import mediainfo

    calls: list = []
    real = mediainfo._ffprobe
    monkeypatch.setattr(mediainfo, "_ffprobe", lambda path: calls.append(path) or real(path))
    return calls


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
def test_a_png_or_jpeg_is_probed_without_ffprobe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 fmt: str, suffix: str) -> None:  # fmt: skip
    calls = _counting_ffprobe(monkeypatch)
    path = save(Image.fromarray(quadrants(48, 64)), tmp_path / f"face{suffix}", orientation=6, format=fmt)
    info = video.probe(path)
    assert calls == []
    assert info.is_image and (info.width, info.height) == (48, 64)  # shown turned a quarter, as EXIF says
    assert (info.fps, info.frame_count, info.duration, info.has_audio) == (25.0, 1, 0.0, False)
    disguised = tmp_path / "face.mp4"  # by its content, not its name
    disguised.write_bytes(path.read_bytes())
    assert video.probe(disguised).is_image and calls == []


def test_other_pictures_and_animated_png_still_go_to_ffprobe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting_ffprobe(monkeypatch)
    frames = [Image.fromarray(np.full((48, 64, 3), value, np.uint8)) for value in (0, 255)]
    animated = tmp_path / "moving.png"
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=40)
    assert Image.open(animated).is_animated
    assert picture.read_common_picture(animated) is None
    video.probe(animated)
    webp = save(Image.fromarray(quadrants()), tmp_path / "face.webp", lossless=True)
    assert picture.read_common_picture(webp) is None and video.probe(webp).is_image
    assert calls == [animated, webp]


def _counting_decodes(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    real = picture._decoded
    monkeypatch.setattr(picture, "_decoded", lambda image: calls.append(image.format) or real(image))
    return calls


@pytest.mark.parametrize("suffix", [".png", ".webp"])
def test_a_probed_picture_is_read_without_decoding_it_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            suffix: str) -> None:  # fmt: skip
    path = save(Image.fromarray(quadrants(48, 64)), tmp_path / f"face{suffix}", orientation=6, lossless=True)
    decodes = _counting_decodes(monkeypatch)
    info = video.probe(path)
    assert len(decodes) == 1 and info.picture is not None
    frames = list(video.read_frames(path, info))
    assert len(decodes) == 1, "the frame is the pixels the probe decoded"
    assert len(frames) == 1 and np.array_equal(frames[0], video.read_image(path)), "upright, as decoded"
    assert len(decodes) == 2
    alone = list(video.read_frames(path, replace(info, picture=None)))  # a description without the pixels
    assert len(decodes) == 3 and np.array_equal(alone[0], frames[0])
    assert info == replace(info, picture=None) and "picture=" not in repr(info), "pixels are not a description"


def test_a_picture_job_decodes_its_picture_once_and_does_not_keep_the_probe_s_copy(
        media: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import lipsync
    from lipsync import pipeline
    from lipsync.options import LipSyncOptions

    decodes = _counting_decodes(monkeypatch)
    kept: list = []
    real = pipeline._render
    monkeypatch.setattr(pipeline, "_render", lambda job, *rest: kept.append(job.info.picture) or real(job, *rest))
    lipsync.run(media["photo"], media["speech"], tmp_path / "out.mp4", LipSyncOptions(face_detector="haar", device="cpu"))
    assert decodes == ["PNG"], "probed once, read from the probe's pixels"
    assert kept == [None], "the job holds its frame, not the probe's pixels as well"


# ---------------------------------------------------------------- one-frame videos


def _one_frame_clip(folder: Path, *, with_sound: bool) -> Path:
    """A one-frame H.264 clip of ffmpeg's test picture, with a second of sound or none."""
    silent = folder / "still.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25",
                    "-frames:v", "1", "-y", str(silent)], check=True)  # fmt: skip
    if not with_sound:
        return silent
    talking = folder / "talk.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(silent), "-f", "lavfi", "-i", "sine=d=1",
                    "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-y", str(talking)],
                   check=True)  # fmt: skip
    return talking


def test_a_still_gif_is_a_picture_and_an_animated_one_a_video(tmp_path: Path) -> None:
    face = quadrants(48, 64)
    still = tmp_path / "sticker.gif"
    Image.fromarray(face).save(still)
    info = video.probe(still)
    assert info.is_image, "a one-frame GIF runs as a picture, not as a video at the GIF's guessed 10 frames/s"
    assert (info.fps, info.frame_count, info.width, info.height) == (25.0, 1, 64, 48)
    assert np.array_equal(info.picture, face[..., ::-1]), "its pixels, as BGR"
    animated = tmp_path / "moving.gif"
    frames = [Image.fromarray(face), Image.fromarray(face[::-1].copy())]
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=100, loop=0)
    moving = video.probe(animated)
    assert not moving.is_image and (moving.fps, moving.frame_count) == (10.0, 2)


def test_a_one_frame_clip_is_a_picture_unless_it_has_sound(tmp_path: Path) -> None:
    silent = video.probe(_one_frame_clip(tmp_path, with_sound=False))
    assert silent.is_image and (silent.width, silent.height, silent.fps) == (64, 48, 25.0)
    assert silent.picture is not None and silent.picture.shape == (48, 64, 3)
    sounding = video.probe(_one_frame_clip(tmp_path, with_sound=True))
    assert not sounding.is_image and sounding.has_audio and sounding.frame_count == 1


def test_a_still_gif_job_runs_at_the_asked_frame_rate(media: dict, tmp_path: Path) -> None:
    import lipsync
    from conftest import ffprobe, speech_frames
    from lipsync.options import LipSyncOptions

    sticker = tmp_path / "sticker.gif"
    Image.open(media["photo"]).convert("RGB").save(sticker)
    out = tmp_path / "out.mp4"
    result = lipsync.run(sticker, media["speech"], out, LipSyncOptions(face_detector="haar", device="cpu", fps=30.0))
    assert result.frames == speech_frames(media["speech"], 30.0), "one mouth per 30th of a second, as for a picture"
    stream = next(s for s in ffprobe(out)["streams"] if s["codec_type"] == "video")
    assert stream["avg_frame_rate"] == "30/1"
