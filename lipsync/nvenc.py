"""Which encoder makes a video's H.264: the GPU's own (NVENC) on a GPU that has one, else x264 on the CPU.

With the networks on a GPU, the CPU is left with decoding the input, pasting and encoding, and x264 is most of it:
on a 2-vCPU AMD Zen 3, a 720p video job whose generator cost nothing (Haar finding the face) ran at ~50 frames/s,
ffmpeg taking three quarters of the CPU (x264's veryfast preset ~14 ms a frame, each of the two decodes ~3.5 ms).
NVENC encodes on the GPU's own video engine, beside the CUDA cores the networks use. Whether a machine has it is
only known by trying: Debian's ffmpeg is built with h264_nvenc, but it needs the driver's libnvidia-encode, which a
container has only when its runtime was asked for video capabilities. So the first video on a GPU encodes a few
frames with exactly the job's NVENC options (probe); a machine without NVENC, or whose ffmpeg refuses the options,
keeps x264, and says why (--doctor, and a log line per job). Should NVENC still fail in a job (its sessions or the
GPU's memory used up by other work), the writer tells it at once, the job runs again with x264, and the process
keeps x264 from then on (give_up). A still keeps x264: only its mouth's part of each frame is
converted and encoded, about 700 frames/s on one core. Set LIPSYNC_NVENC=0 to keep x264 everywhere."""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from typing import Tuple

from . import ffmpeg

CODEC = "h264_nvenc"
PRESET = "p4"  # NVENC's middle preset (p1 fastest .. p7 best quality): its default
TUNE = "hq"  # rather than low latency: the file is watched afterwards
CQ = 19  # constant quality (0-51, like x264's CRF), a step above x264's CRF 18: not compared here (no GPU)
PROFILE = "high"  # what x264's veryfast gives too; every browser plays it
PIX_FMT = "yuv420p"
SWITCH = "LIPSYNC_NVENC"  # "0" keeps x264 everywhere
# Frame sides NVENC gets: its H.264 stops at 4096 px a side, and its smallest frame differs between GPUs (the driver
# reports it); below this x264 is cheap anyway (a 256×256 video ~16 times cheaper than 1080p)
MIN_SIDE = 256
MAX_SIDE = 4096
PROBE_INPUT = f"testsrc2=size={MIN_SIDE}x{MIN_SIDE}:rate=25"  # a moving test picture of the smallest size NVENC gets
PROBE_SECONDS = "0.2"
PROBE_TIMEOUT_S = 30.0  # a first CUDA context can take seconds; a driver that hangs must not hang the job

_given_up: list[str] = []  # why NVENC is no longer used in this process: a job's encode with it failed


@dataclass(frozen=True)
class Verdict:
    """Whether NVENC encodes here, and why (or why not), in words for --doctor and a job's log line."""

    usable: bool
    reason: str


def args(keyframes_forced: bool) -> list[str]:
    """The video encoder's options for NVENC; with `keyframes_forced` (segments cut at keyframes), forced keyframes
    are IDR frames, so that each segment decodes on its own, as x264's are."""
    codec = ["-c:v", CODEC, "-preset", PRESET, "-tune", TUNE, "-rc", "vbr", "-cq", str(CQ), "-b:v", "0",
             "-profile:v", PROFILE, "-pix_fmt", PIX_FMT]  # fmt: skip
    return [*codec, "-forced-idr", "1"] if keyframes_forced else codec


def switched_off() -> bool:
    return os.environ.get(SWITCH, "").strip() == "0"


def verdict() -> Verdict:
    """Whether this machine's ffmpeg encodes with NVENC and the options `args` gives: tried once per process, and
    not used again once it failed in a job (give_up)."""
    if _given_up:
        return Verdict(False, _given_up[0])
    return _tried()


def give_up(reason: str) -> None:
    """NVENC failed in a job (`reason`: ffmpeg's words): the rest of this process encodes with x264."""
    if not _given_up:
        _given_up.append(f"{CODEC} failed in a job: {reason}")


@functools.lru_cache(maxsize=1)
def _tried() -> Verdict:
    """The test encode (see verdict)."""
    if switched_off():
        return Verdict(False, f"{SWITCH}=0")
    command = [*ffmpeg.head(), "-f", "lavfi", "-i", PROBE_INPUT, "-t", PROBE_SECONDS, *args(keyframes_forced=True),
               "-f", "null", "-"]  # fmt: skip
    try:
        done = ffmpeg.run(command, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Verdict(False, f"ffmpeg did not finish a test encode with {CODEC} within {PROBE_TIMEOUT_S:g} s")
    if done.returncode != 0:
        return Verdict(False, ffmpeg.first_line(done.stderr))
    return Verdict(True, f"{CODEC} encodes here")


def chosen(on_gpu: bool, still: bool, size: Tuple[int, int]) -> bool:
    """Whether a job's H.264 of frames of `size` (width, height) is NVENC's: a video whose networks run on a GPU with
    NVENC, its sides within MIN_SIDE..MAX_SIDE. Otherwise x264 encodes it."""
    return on_gpu and not still and _fits(size) and verdict().usable


def why_not(size: Tuple[int, int]) -> str:
    """Why a GPU job's video of frames of `size` is x264's, in words."""
    if not verdict().usable:
        return f"x264: NVENC cannot be used ({verdict().reason})"
    return f"x264: {size[0]}×{size[1]} px frames lie outside the {MIN_SIDE}–{MAX_SIDE} px sides NVENC gets"


def _fits(size: Tuple[int, int]) -> bool:
    return all(MIN_SIDE <= side <= MAX_SIDE for side in size)


def describe(on_gpu: bool) -> str:
    """What encodes a video's H.264 on this machine, and why, in one line."""
    if not on_gpu:
        return "x264 on the CPU (NVENC is tried only when the networks run on a GPU)"
    found = verdict()
    if found.usable:
        return f"NVENC ({CODEC}) for videos, x264 for pictures"
    return f"x264 on the CPU: NVENC cannot be used ({found.reason})"
