"""Rebuild the example assets: a drawn cartoon face, the public-domain astronaut, espeak-ng speech, a short clip.

Run from anywhere: `python examples/make_examples.py`. Needs opencv, scikit-image, ffmpeg and espeak-ng.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
SIDE = 512  # px, every picture and the clip
SUPERSAMPLE = 4  # draw this much larger, then shrink: smooth edges without anti-aliasing tricks
CLIP_FPS = 25
CLIP_SECONDS = 3
CLIP_SIDE = 384  # px: small file, still a clear face
STILL_WIDTH = 160  # px: the clip's thumbnail in the app
JPEG_QUALITY = 90
SPEECH = {
    "astronaut.mp3": "Hello from orbit. The view up here is wonderful.",
    "clip.mp3": "This video was a still photo a moment ago.",
}

# Cartoon colours, BGR.
SKY_TOP, SKY_BOTTOM = (250, 225, 190), (235, 190, 140)
SKIN, SKIN_SHADE = (150, 190, 245), (120, 160, 225)
HAIR, BROW = (40, 60, 110), (30, 40, 70)
WHITE, IRIS, PUPIL = (255, 255, 255), (150, 110, 60), (20, 20, 20)
LIPS, BLUSH, OUTLINE = (110, 100, 210), (150, 160, 250), (60, 80, 120)
SHIRT = (160, 110, 60)


def _s(*values: float) -> tuple[int, ...]:
    """Cartoon coordinates (on a 512 grid) scaled to the supersampled canvas."""
    return tuple(int(round(v * SUPERSAMPLE)) for v in values)


def _ellipse(img: np.ndarray, centre, axes, colour, thickness: int = -1, angle: float = 0, arc=(0, 360)) -> None:
    t = thickness if thickness < 0 else thickness * SUPERSAMPLE
    cv2.ellipse(img, _s(*centre), _s(*axes), angle, arc[0], arc[1], colour, t, cv2.LINE_AA)


def _sky() -> np.ndarray:
    side = SIDE * SUPERSAMPLE
    ramp = np.linspace(0.0, 1.0, side)[:, None, None]
    sky = (1 - ramp) * np.array(SKY_TOP) + ramp * np.array(SKY_BOTTOM)
    return np.ascontiguousarray(np.broadcast_to(sky, (side, side, 3)).astype(np.uint8))


def _head(img: np.ndarray) -> None:
    _ellipse(img, (256, 520), (190, 110), SHIRT)
    cv2.rectangle(img, _s(218, 360), _s(294, 440), SKIN_SHADE, -1)
    _ellipse(img, (256, 175), (150, 120), HAIR)  # back hair
    for x in (122, 390):
        _ellipse(img, (x, 250), (24, 38), SKIN_SHADE)  # ears
    _ellipse(img, (256, 250), (132, 160), SKIN)
    _ellipse(img, (256, 250), (132, 160), OUTLINE, 2)
    _ellipse(img, (256, 130), (140, 70), HAIR, arc=(180, 360))  # fringe
    cv2.rectangle(img, _s(116, 128), _s(396, 140), HAIR, -1)


def _eyes(img: np.ndarray) -> None:
    for x in (204, 308):
        _ellipse(img, (x, 196), (38, 10), BROW, angle=0, arc=(180, 360), thickness=9)
        _ellipse(img, (x, 236), (32, 22), SKIN_SHADE)  # socket shading
        _ellipse(img, (x, 238), (26, 17), WHITE)
        _ellipse(img, (x, 240), (14, 14), IRIS)
        _ellipse(img, (x, 240), (7, 7), PUPIL)
        _ellipse(img, (x + 5, 234), (3, 3), WHITE)
        _ellipse(img, (x, 238), (26, 17), OUTLINE, 2)


def _nose_mouth(img: np.ndarray) -> None:
    _ellipse(img, (256, 268), (12, 34), SKIN_SHADE)
    _ellipse(img, (256, 298), (22, 10), SKIN_SHADE)
    for x in (246, 266):
        _ellipse(img, (x, 300), (5, 3), OUTLINE)
    for x in (172, 340):
        _ellipse(img, (x, 306), (26, 14), BLUSH)
    _ellipse(img, (256, 342), (40, 13), LIPS)
    _ellipse(img, (256, 340), (40, 4), OUTLINE, 2, arc=(0, 180))


def draw_cartoon() -> np.ndarray:
    """A friendly front-facing cartoon head, drawn from ellipses, 512×512 BGR."""
    img = _sky()
    _head(img)
    _eyes(img)
    _nose_mouth(img)
    return cv2.resize(img, (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def astronaut() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins, NASA: public domain), BGR."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., ::-1])


def speak(text: str, target: Path) -> None:
    """espeak-ng speech, encoded as a small mono mp3."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(wav), text], check=True)
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-ac", "1",
                        "-c:a", "libmp3lame", "-b:a", "48k", f"file:{target}"], check=True)  # fmt: skip


def write_clip(image: np.ndarray, target: Path) -> None:
    """A few seconds of the photo with a slow zoom and a gentle sway: a face that moves. H.264, no audio."""
    small = cv2.resize(image, (CLIP_SIDE, CLIP_SIDE), interpolation=cv2.INTER_AREA)
    ffmpeg = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
              "-s", f"{CLIP_SIDE}x{CLIP_SIDE}", "-r", str(CLIP_FPS), "-i", "-", "-c:v", "libx264",
              "-preset", "slow", "-crf", "28", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
              f"file:{target}"]  # fmt: skip
    proc = subprocess.Popen(ffmpeg, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    frames = CLIP_FPS * CLIP_SECONDS
    for i in range(frames):
        t = i / frames
        matrix = cv2.getRotationMatrix2D((CLIP_SIDE / 2, CLIP_SIDE / 2), 3 * np.sin(2 * np.pi * t), 1 + 0.06 * t)
        proc.stdin.write(cv2.warpAffine(small, matrix, (CLIP_SIDE, CLIP_SIDE), borderMode=cv2.BORDER_REFLECT).tobytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("ffmpeg could not write the clip")


def write_still(clip: Path, target: Path) -> None:
    """The clip's first frame, small: the thumbnail of its example in the app."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", f"file:{clip}", "-frames:v", "1",
                    "-vf", f"scale={STILL_WIDTH}:-2", "-q:v", "4", f"file:{target}"], check=True)  # fmt: skip


def main() -> None:
    cv2.imwrite(str(HERE / "cartoon.png"), draw_cartoon(), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    photo = astronaut()
    cv2.imwrite(str(HERE / "astronaut.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    for name, text in SPEECH.items():
        speak(text, HERE / name)
    write_clip(photo, HERE / "clip.mp4")
    write_still(HERE / "clip.mp4", HERE / "clip.jpg")


if __name__ == "__main__":
    main()
