"""Pictures in: decoded with Pillow (EXIF orientation applied, colours in sRGB, alpha on white, any depth or colour
model to BGR uint8); formats Pillow does not read go through ffmpeg, which hands them over as PNG."""

from __future__ import annotations

import functools
import io
import struct
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageCms, ImageOps

from lipsync import ffmpeg
from lipsync.errors import LipSyncError, first_line
from lipsync.types import Frame

# Formats Pillow may open (all have a signature, none calls out to another program); the rest go to ffmpeg.
# HEIF (HEIC: iPhones' photos, which ffmpeg 5.1 cannot read) comes from the pillow-heif plugin.
PILLOW_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "TIFF", "BMP", "PPM", "SUN", "JPEG2000", "AVIF", "HEIF")
# The pictures most people give (photos, screenshots), known by their signature: ffprobe would call each one still
# picture too, so a probe decodes them at once (an animated PNG is left to ffmpeg, which reads it as a video).
COMMON_FORMATS = ("PNG", "JPEG")  # JPEG includes MPO (a camera's JPEG holding more than one picture)
# HEIF's major brands for HEVC pictures (ISO/IEC 23008-12): such a file is a photo, decoded by Pillow before ffmpeg is
# asked (ffmpeg 5.1 reads none; 7.1 would show one 512-pixel tile of an iPhone photo as a video).
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1")
FFMPEG_PICTURE_FORMAT = "PNG"  # what ffmpeg re-encodes other formats to, on a pipe
ALPHA_BACKGROUND = 1.0  # transparent pixels go on white: cut-out portraits are usually shown on white
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # one channel of 16/32-bit integers or floats
DEEP_INTEGER_MAX = 65535.0  # full scale of 16-bit pictures (Pillow holds some in 32-bit "I" mode too)
UINT8_MAX = 255.0
# A picture whose ICC profile names another RGB space (Display P3: iPhone photos, Mac screenshots; Adobe RGB: cameras)
# has its colours converted to sRGB, the space of the BT.709 video it becomes: taken as sRGB, a P3 photo's reds and
# greens came out duller than the browser showed them. Colorimetric, as browsers convert matrix profiles
SRGB_PROFILE_NAME = "sRGB"  # in an embedded profile's description: already sRGB, nothing to convert
PROFILED_MODES = ("RGB", "RGBA")
PROFILES_KEPT = 8  # distinct embedded profiles whose transforms are kept (a phone's photos share one)
# What a damaged file makes Pillow raise on open, load or conversion (UnidentifiedImageError is an OSError).
DECODE_FAILURES = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)


def picture_args(path: str | Path) -> list[str]:
    """ffmpeg command re-encoding the first picture of a file as PNG on stdout (for formats Pillow lacks)."""
    return [*ffmpeg.head(), "-i", ffmpeg.file_arg(path), "-map", "0:v:0", "-frames:v", "1",
            "-c:v", "png", "-f", "image2pipe", "pipe:1"]


def read_picture(path: str | Path) -> Frame | None:
    """A picture file as BGR uint8 (see `to_bgr`); None when it is damaged or no picture at all.

    Pillow decodes the formats it reads (a file it opens but cannot decode is damaged); any other format
    goes through ffmpeg, as PNG on a pipe. LipSyncError when the picture has more pixels than Pillow
    decodes safely.
    """
    name = Path(path).name
    image = open_picture(path, _pillow_formats(), name)
    if image is None:
        result = ffmpeg.run(picture_args(path))
        if result.returncode != 0 or not result.stdout:
            return None
        image = open_picture(io.BytesIO(result.stdout), (FFMPEG_PICTURE_FORMAT,), name)
        if image is None:
            return None
    with image:
        return _decoded(image)


def read_common_picture(path: str | Path) -> Frame | None:
    """A PNG (not animated) or JPEG file decoded as `read_picture` decodes it; None for any other file, or a damaged
    one. LipSyncError when the picture has more pixels than Pillow decodes safely."""
    image = open_picture(path, COMMON_FORMATS, Path(path).name)
    if image is None:
        return None
    with image:
        if image.format == "PNG" and getattr(image, "is_animated", False):
            return None
        return _decoded(image)


def is_heif(path: str | Path) -> bool:
    """True when the file starts as a HEIF picture does (an `ftyp` box naming a HEIF brand)."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def reads_heif() -> bool:
    """Whether this set-up decodes HEIC/HEIF photos (pillow-heif is installed)."""
    return "HEIF" in _pillow_formats()


def read_image(path: str | Path) -> Frame:
    """A picture as BGR uint8: EXIF orientation applied, grey/CMYK to BGR, 16-bit scaled, alpha on white."""
    path = Path(path)
    if not path.is_file():
        raise LipSyncError(f"{path} does not exist or is not a file")
    frame = read_picture(path)
    if frame is None:
        raise LipSyncError(f"could not decode the picture {path}")
    return frame


def to_bgr(image: Image.Image) -> Frame:
    """A decoded Pillow image as height x width x 3 BGR uint8: alpha (RGBA, LA, P with transparency)
    composited on white; greyscale, 1-bit, CMYK, YCbCr to colour; 16-bit and 32-bit integers scaled from
    0..65535, floats taken as 0..1."""
    if image.mode in ALPHA_MODES or (image.mode not in DEEP_MODES and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"))
        return _composite(rgba[..., 2::-1], rgba[..., 3])
    if image.mode in DEEP_MODES:
        grey = _to_uint8(np.asarray(image))
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    return np.ascontiguousarray(rgb[..., ::-1])


def open_picture(source: str | Path | IO[bytes], formats: tuple[str, ...], name: str) -> Image.Image | None:
    """The picture opened (header read) by Pillow, or None when it is in none of `formats`."""
    try:
        return Image.open(source, formats=formats)
    except Image.DecompressionBombError as error:
        raise LipSyncError(f"the picture {name} is too large to decode ({first_line(error)}); "
                           "save it smaller, a few thousand pixels a side at most") from error
    except DECODE_FAILURES:
        return None


@functools.lru_cache(maxsize=1)
def register_plugins() -> None:
    """Teach Pillow (this process's, gradio's too) the formats of plugins lipsync uses: pillow-heif's HEIC/HEIF.
    Done on first need, as importing the plugin takes ~70 ms; a set-up without the plugin reads no HEIC."""
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener()


# ---------------------------------------------------------------- internals


@functools.lru_cache(maxsize=1)
def _pillow_formats() -> tuple[str, ...]:
    """PILLOW_FORMATS this Pillow build has (AVIF and JPEG 2000 depend on optional libraries, HEIF on a plugin)."""
    register_plugins()
    Image.init()
    return tuple(name for name in PILLOW_FORMATS if name in Image.OPEN)


def _decoded(image: Image.Image) -> Frame | None:
    """The opened picture decoded, upright, as BGR uint8; None when its data is damaged or cut short."""
    try:
        image.load()
        return to_bgr(_in_srgb(_upright(image)))
    except DECODE_FAILURES:
        return None


def _upright(image: Image.Image) -> Image.Image:
    """The image turned/flipped as its EXIF orientation (1-8) says; as stored when its EXIF is unreadable."""
    try:
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of a large picture
    except DECODE_FAILURES:
        pass
    return image


def _in_srgb(image: Image.Image) -> Image.Image:
    """The image with its colours converted in place to sRGB when its ICC profile is of another RGB space; as it is
    when it has none, an sRGB one, or one that cannot be used (a damaged profile is ignored, as browsers ignore it).
    About 40 ns a pixel (0.5 s for a 12-megapixel photo on one core)."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in PROFILED_MODES:
        return image
    transform = _to_srgb(icc, image.mode)
    if transform is not None:
        try:
            ImageCms.applyTransform(image, transform, inPlace=True)
        except ImageCms.PyCMSError:
            pass  # the profile's colours cannot be applied: the pixels as stored
    return image


@functools.lru_cache(maxsize=PROFILES_KEPT)
def _to_srgb(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform from an embedded ICC profile's RGB to sRGB; None for an sRGB profile or an unusable one."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if SRGB_PROFILE_NAME in ImageCms.getProfileDescription(source):
            return None
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        return ImageCms.buildTransform(source, srgb, mode, mode, ImageCms.Intent.RELATIVE_COLORIMETRIC)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _to_unit(image: np.ndarray) -> np.ndarray:
    """Image as float32 in [0, 1] whatever its depth."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / UINT8_MAX
    if np.issubdtype(image.dtype, np.integer):
        return np.clip(image.astype(np.float32) / DEEP_INTEGER_MAX, 0.0, 1.0)
    return np.clip(image.astype(np.float32), 0.0, 1.0)  # float pictures (TIFF) are taken as 0..1


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return np.rint(_to_unit(image) * UINT8_MAX).astype(np.uint8)


def _composite(colour: np.ndarray, alpha: np.ndarray) -> Frame:
    """Alpha-composite BGR onto ALPHA_BACKGROUND, result uint8."""
    weight = _to_unit(alpha)[..., None]
    blended = _to_unit(colour) * weight + ALPHA_BACKGROUND * (1.0 - weight)
    return np.rint(blended * UINT8_MAX).astype(np.uint8)
