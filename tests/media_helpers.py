"""What the tests of ffmpeg's readers and writers share (test_video, test_encoding, test_ffmpeg, test_segments, and
test_faults, test_stream for their clean-up checks): small clips, ffmpeg and ffprobe runs, and checks that nothing
(processes, descriptors) is left behind, waiting for what a thread ends just after; and HDR clips (for
test_end_to_end too)."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

AUDIO_SECONDS = 1.0
ODD_SIZE = (321, 241)  # width, height


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
