"""What one request may ask for, from environment variables, and the checks that hold requests to it."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import gradio as gr

MAX_SECONDS_ENV = "LIPSYNC_MAX_SECONDS"
MAX_UPLOAD_MB_ENV = "LIPSYNC_MAX_UPLOAD_MB"
MAX_TEXT_CHARS_ENV = "LIPSYNC_MAX_TEXT_CHARS"
MAX_ENHANCED_SECONDS_ENV = "LIPSYNC_MAX_ENHANCED_SECONDS"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, from environment variables; 0 means no limit."""

    max_seconds: float = 60.0  # LIPSYNC_MAX_SECONDS: longest speech or face video
    max_upload_mb: float = 100.0  # LIPSYNC_MAX_UPLOAD_MB: largest uploaded file
    max_text_chars: int = 1000  # LIPSYNC_MAX_TEXT_CHARS: longest text to speak
    # LIPSYNC_MAX_ENHANCED_SECONDS: longest speech with face sharpening when no GPU is used (GPEN-512 takes
    # seconds per frame on a CPU: 10 s of speech is minutes of work, during which the queue waits)
    max_enhanced_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Limits":
        return cls(
            env_number(env, MAX_SECONDS_ENV, cls.max_seconds),
            env_number(env, MAX_UPLOAD_MB_ENV, cls.max_upload_mb),
            int(env_number(env, MAX_TEXT_CHARS_ENV, cls.max_text_chars)),
            env_number(env, MAX_ENHANCED_SECONDS_ENV, cls.max_enhanced_seconds),
        )


def env_number(env: Mapping[str, str], name: str, default: float) -> float:
    """A number ≥ 0 from the environment (empty or unset: the default); ValueError that names the variable."""
    text = env.get(name, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if value < 0:
        raise ValueError(f"{name} must be a number ≥ 0 (0 = no limit); got {text!r}")
    return value


def launch_options(limits: Limits) -> dict:
    """demo.launch() arguments: the upload limit (gradio enforces it server-side)."""
    return {"max_file_size": f"{limits.max_upload_mb:g}mb" if limits.max_upload_mb else None}


@dataclass(frozen=True)
class Measured:
    """A request's file as probed once, for every check that needs its length."""

    seconds: float  # what it lasts as a face: its video's length (0 for a picture), else its sound's
    sound_seconds: float  # what its sound lasts: the speech's length when it is the speech (0 if unknown or none)
    has_audio: bool


def measure(path: str | Path, require_video: bool = False, as_speech: bool = False) -> Measured:
    """The file's lengths from its header; `as_speech` decodes its sound when the header does not say."""
    from lipsync import video

    info = video.probe(path, require_video=require_video)
    if info.is_image:
        return Measured(0.0, 0.0, False)
    measured = Measured(info.duration or info.audio_duration, info.audio_duration, info.has_audio)
    return with_sound_length(path, measured) if as_speech else measured


def with_sound_length(path: str | Path, measured: Measured) -> Measured:
    """`measured`, with its sound's length decoded from `path` when it has sound and its header did not say."""
    if not measured.has_audio or measured.sound_seconds:
        return measured
    from lipsync import audio

    sound = audio.duration(audio.load_audio(path))
    return replace(measured, seconds=measured.seconds or sound, sound_seconds=sound)


def check_length(seconds: float, what: str, limits: Limits) -> None:
    """gr.Error when something lasts longer than the app accepts."""
    if limits.max_seconds and seconds > limits.max_seconds:
        raise gr.Error(
            f"The {what} lasts {seconds:.1f} s; this app accepts up to {limits.max_seconds:g} s. "
            "Trim it, or run lipsync on your own machine (its command line has no limit)."
        )


def check_seconds(path: str | Path, what: str, limits: Limits, require_video: bool = False,
                  as_speech: bool = False) -> Measured:  # fmt: skip
    """The file measured, and held to the app's length: a face (which must be a picture or a video, given
    `require_video`) by its video's length, speech (`as_speech`) by its sound's."""
    measured = measure(path, require_video, as_speech)
    check_length(measured.sound_seconds if as_speech else measured.seconds, what, limits)
    return measured


def check_enhanced_seconds(seconds: float, limits: Limits) -> None:
    """gr.Error when speech is too long to sharpen the face on this CPU (the caller knows no GPU is used)."""
    if limits.max_enhanced_seconds and seconds > limits.max_enhanced_seconds:
        raise gr.Error(
            f"The speech lasts {seconds:.1f} s; without a GPU this app sharpens the face (GPEN) for up to "
            f"{limits.max_enhanced_seconds:g} s of speech. Turn \"Sharpen the face\" off, or trim the speech."
        )


def check_text(text: str, limits: Limits) -> None:
    if limits.max_text_chars and len(text) > limits.max_text_chars:
        raise gr.Error(f"The text has {len(text)} characters; this app speaks up to {limits.max_text_chars}.")
