"""The voice picker: languages and voices from lipsync.tts's catalog, and the voice parameter's API type."""

from __future__ import annotations

from typing import Any, Dict

import gradio as gr

from lipsync import tts

VOICE_API_NOTE = f"any edge-tts voice ShortName, such as {tts.DEFAULT_VOICE} or de-DE-KatjaNeural (see edge-tts -l)"


def language_choices() -> list:
    return tts.catalog().languages()


def voice_choices(locale: str) -> list:
    return [(v.label, v.name) for v in tts.catalog().voices(locale)]


def voices_for_language(locale: str, voice: str):
    """The voice list of a language; the current voice stays if it speaks that language."""
    choices = voice_choices(locale)
    keep = voice if voice and tts.locale_of(voice) == locale else (choices[0][1] if choices else None)
    return gr.Dropdown(choices=choices, value=keep)


def refresh_voice_picker(locale: str, voice: str):
    """On page load: the service's voice list when it can be fetched (at most daily), else the curated one."""
    tts.catalog().refresh()
    return gr.Dropdown(choices=language_choices()), voices_for_language(locale, voice)


def voice_api_info() -> Dict[str, Any]:
    """The voice parameter's API type: any voice name, not just the few choices the page starts with."""
    return {"type": "string", "pattern": tts.VOICE_PATTERN.pattern, "additional_description": VOICE_API_NOTE}
