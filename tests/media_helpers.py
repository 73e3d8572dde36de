"""What the tests of ffmpeg's readers and writers share (test_video, test_encoding, test_ffmpeg, test_segments, and
test_faults, test_stream for their clean-up checks): small clips, ffmpeg and ffprobe runs, and checks that nothing
(processes, descriptors) is left behind, waiting for what a thread ends just after; HDR clips (for
test_end_to_end too); and a drawn face no detector finds (test_boxfollow, test_webapp, test_browser)."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import numpy as np

AUDIO_SECONDS = 1.0
ODD_SIZE = (321, 241)  # width, height


# A drawing of a face (640×480) no detector takes for one; its face box (y1 y2 x1 x2) runs from above the
# eyebrows (y 170) to the chin's bottom (y 385), as wide as tall, centred on x 321
SKETCH_BOX = (170, 385, 214, 429)


def face_sketch(dx: int = 0, dy: int = 0, mouth_open: int = 0) -> "np.ndarray":
    """The drawing (BGR), its face moved by (dx, dy) px and its mouth open by `mouth_open` px (0: a smile)."""
    import cv2
    import numpy as np

    drawing = np.full((480, 640, 3), (200, 220, 235), np.uint8)
    cv2.circle(drawing, (320 + dx, 240 + dy), 150, (90, 190, 250), -1)
    for eye in (265, 375):
        cv2.circle(drawing, (eye + dx, 200 + dy), 18, (40, 40, 40), -1)
    if mouth_open:
        cv2.ellipse(drawing, (320 + dx, 320 + dy), (45, mouth_open), 0, 0, 360, (30, 30, 90), -1)
    else:
        cv2.ellipse(drawing, (320 + dx, 310 + dy), (60, 25), 0, 0, 180, (30, 30, 160), 8)
    return drawing


def ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *map(str, args)], check=True)


def hdr_clip(photo: Path, folder: Path, transfer: str) -> Path:
    """The photo as 10-bit BT.2020 HDR video (lossless FFV1), made as ITU-R BT.2408 says: SDR white at 203 cd/m²."""
    clip = folder / f"{transfer}.mkv"
    ffmpeg("-loop", "1", "-i", photo, "-frames:v", "3", "-vf",
           f"format=gbrpf32le,zscale=tin=bt709:pin=bt709:t={transfer}:p=bt2020:m=bt2020nc:r=tv:npl=203,"
           "format=yuv420p10le", "-c:v", "ffv1", "-color_trc", transfer, "-color_primaries", "bt2020",
           "-colorspace", "bt2020nc", clip)  # fmt: skip
    return clip


def ffmpeg_children() -> list[str]:
    """ffmpeg processes (running or zombie) whose parent is this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        if parent == os.getpid() and name.startswith("ffmpeg"):
            found.append(f"{entry.name} {name}")
    return found


def open_fds() -> set[str]:
    """This process's open file descriptors, as "fd -> what it is"."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            found.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
    return found


def eventually(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.01) -> bool:
    """Whether `condition` holds within timeout_s, asked every poll_s: for what a thread ends just after."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(poll_s)
    return condition()


@contextlib.contextmanager
def no_garbage_collection():
    """Clean-up must not depend on the collector: it is off inside."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def make_clips(root: Path) -> dict[str, Path]:
    """Small clips in `root`: an odd-sized yuv444p video, a plain 64x48 one, an AAC tone and a video with sound."""
    paths = {name: root / file for name, file in [
        ("odd", "odd.mp4"), ("plain", "plain.mp4"), ("audio", "tone.m4a"), ("with_audio", "talk.mp4")]}
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=321x241:rate=25", "-t", "2",
           "-c:v", "libx264", "-pix_fmt", "yuv444p", "-crf", "10", paths["odd"])
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-t", "1",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", paths["plain"])
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={AUDIO_SECONDS}",
           "-c:a", "aac", paths["audio"])
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-f", "lavfi", "-i",
           "sine=sample_rate=48000", "-t", "1.5", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", paths["with_audio"])
    return paths


# Display P3 as Apple's profile states it: primaries adapted to the D50 connection space, D50 white; its tone curve
# here a plain gamma of 2.2 (Apple's is sRGB's piecewise curve), which the tests' own arithmetic then follows
DISPLAY_P3_D50 = ((0.5151, 0.2412, -0.0011), (0.2919, 0.6922, 0.0419), (0.1572, 0.0666, 0.7841))
D50_WHITE = (0.9642, 1.0, 0.8249)
ICC_GAMMA = 2.2


def rgb_icc_profile(description: str, colorants=DISPLAY_P3_D50, gamma: float = ICC_GAMMA) -> bytes:
    """An ICC v2 display profile of an RGB space (a matrix, one gamma per channel), as cameras and phones embed."""
    import struct

    def fixed(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(values) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(fixed(v) for v in values)

    text = description.encode("ascii") + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz(D50_WHITE)), (b"rXYZ", xyz(colorants[0])), (b"gXYZ", xyz(colorants[1])),
            (b"bXYZ", xyz(colorants[2])), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text\0\0\0\0none\0\0\0\0")]  # fmt: skip
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + b"".join(fixed(v) for v in D50_WHITE) + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + data
