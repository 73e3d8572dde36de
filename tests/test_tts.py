"""Text to speech: the curated voice picker, rate mapping, and espeak-ng standing in when edge-tts fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ffprobe, free_port

from lipsync import tts
from lipsync.errors import LipSyncError

MIN_SPEECH_S = 0.3
FD_CALLS = 30  # speak() calls per engine in the descriptor test


def _audio(path: Path) -> dict:
    info = ffprobe(path)
    stream = next(s for s in info["streams"] if s["codec_type"] == "audio")
    return {"rate": int(stream["sample_rate"]), "seconds": float(info["format"]["duration"])}


def test_curated_voices_are_edge_names_and_cover_the_default():
    voices = tts.curated_voices()
    assert len(voices) >= 40 and len({v.locale for v in voices}) == len(tts.CURATED)
    for voice in voices:
        assert tts.VOICE_PATTERN.match(voice.name), voice.name
        assert tts.locale_of(voice.name) == voice.locale and voice.gender in ("Female", "Male")
    assert tts.DEFAULT_VOICE in {v.name for v in voices}
    assert ("English (United States)", "en-US") in tts.VoiceCatalog(fetch=lambda: []).languages()


def test_voice_labels_read_well():
    assert tts.Voice("en-US-EmmaMultilingualNeural", "en-US", "Female").label == "Emma (female, multilingual)"
    assert tts.Voice("zh-CN-liaoning-XiaobeiNeural", "zh-CN-liaoning", "Female").label == "Xiaobei (female)"
    assert tts.Voice("cy-GB-AledNeural", "cy-GB", "").label == "Aled"


def test_rates_map_to_both_engines():
    import edge_tts

    assert [tts.edge_rate(r) for r in (-20, 0, 35)] == ["-20%", "+0%", "+35%"]
    for rate in (tts.MIN_RATE, 0, tts.MAX_RATE):  # edge-tts validates the string when the object is built
        edge_tts.Communicate("hi", tts.DEFAULT_VOICE, rate=tts.edge_rate(rate))
    assert tts.espeak_speed(tts.MIN_RATE) < tts.espeak_speed(0) == tts.ESPEAK_WPM < tts.espeak_speed(tts.MAX_RATE)


def test_every_curated_language_has_an_installed_espeak_voice():
    installed = tts.espeak_voices()
    assert "en-us" in installed
    chosen = {locale: tts.espeak_voice(locale) for locale in tts.CURATED}
    assert all(voice in installed for voice in chosen.values())
    assert chosen["zh-CN"] == "cmn" and chosen["fr-FR"] == "fr-fr" and chosen["pt-BR"] == "pt-br"
    assert chosen["de-DE"] == "de" and chosen["en-AU"] == "en-us"
    assert tts.espeak_voice("xx-YY") == tts.ESPEAK_FALLBACK_VOICE


def test_failed_edge_tts_leaves_no_empty_mp3_and_espeak_speaks(tmp_path):
    def unreachable(text, voice, rate, target):
        target.write_bytes(b"")  # as edge-tts does: the file is opened before connecting
        raise OSError("Cannot connect to host speech.platform.bing.com:443 [Name or service not known]")

    speech = tts.speak("Hello there, how are you?", tmp_path, "en-GB-SoniaNeural", 20, online=unreachable)
    assert speech.engine == tts.ENGINE_ESPEAK and speech.voice == "en-gb"
    assert "could not be reached" in speech.fallback_reason and "Name or service not known" in speech.fallback_reason
    assert [p.name for p in tmp_path.iterdir()] == [speech.path.name] and speech.path.suffix == ".wav"
    audio = _audio(speech.path)
    assert audio["rate"] >= 16000 and audio["seconds"] > MIN_SPEECH_S


def test_real_edge_tts_without_its_service_falls_back_fast(tmp_path, monkeypatch):
    """edge-tts itself, pointed at a refused local proxy: the same failure as a machine without internet."""
    proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTPS_PROXY", "WSS_PROXY", "https_proxy", "wss_proxy"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    speech = tts.speak("Bonjour tout le monde.", tmp_path, "fr-FR-DeniseNeural")
    assert speech.engine == tts.ENGINE_ESPEAK and speech.voice == "fr-fr"
    assert speech.fallback_reason.startswith("the edge-tts service could not be reached")
    assert "object at 0x" not in speech.fallback_reason
    assert not list(tmp_path.glob("*.mp3"))


def test_edge_tts_audio_is_kept_when_it_works(tmp_path):
    def service(text, voice, rate, target):
        target.write_bytes(b"ID3 pretend mp3")

    speech = tts.speak("Hi.", tmp_path, online=service)
    assert speech.engine == tts.ENGINE_EDGE and speech.path.suffix == ".mp3" and speech.fallback_reason is None
    assert speech.voice == tts.DEFAULT_VOICE


def test_no_audio_from_the_service_also_falls_back(tmp_path):
    speech = tts.speak("Hi.", tmp_path, online=lambda *args: None)
    assert speech.engine == tts.ENGINE_ESPEAK and "returned no audio" in speech.fallback_reason
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(
    "text, voice, rate, message",
    [
        ("   \n ", tts.DEFAULT_VOICE, 0, "no text to speak"),
        ("Hi", "Emma", 0, "not an edge-tts voice name"),
        ("Hi", tts.DEFAULT_VOICE, 300, r"between -50% and \+100%"),
    ],
)
def test_bad_requests_are_user_errors(tmp_path, text, voice, rate, message):
    with pytest.raises(LipSyncError, match=message):
        tts.speak(text, tmp_path, voice, rate, online=lambda *args: None)
    assert not list(tmp_path.iterdir())


def test_missing_espeak_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))

    def offline(*args):
        raise OSError("offline")

    with pytest.raises(LipSyncError, match="espeak-ng is not installed"):
        tts.speak("Hi.", tmp_path, online=offline)
    assert not list(tmp_path.iterdir())


def _service_entry(name: str, gender: str, language: str) -> dict:
    given = name.split("-")[-1].removesuffix("Neural")
    locale = tts.locale_of(name)
    return {"ShortName": name, "Locale": locale, "Gender": gender,
            "FriendlyName": f"Microsoft {given} Online (Natural) - {language}"}  # fmt: skip


def test_catalog_takes_the_service_list_once_and_keeps_curated_labels():
    calls = []
    entries = [
        _service_entry("cy-GB-NiaNeural", "Female", "Welsh (United Kingdom)"),
        _service_entry("en-US-AvaNeural", "Female", "English (United States)"),
        {"ShortName": "broken", "Locale": "xx"},
    ]
    catalog = tts.VoiceCatalog(fetch=lambda: calls.append(1) or entries)
    assert catalog.refresh() and catalog.source == "service"
    assert catalog.languages() == [("English (United States)", "en-US"), ("Welsh (United Kingdom)", "cy-GB")]
    assert [v.name for v in catalog.voices("cy-GB")] == ["cy-GB-NiaNeural"]
    assert catalog.refresh() and len(calls) == 1  # not due again for a day


def test_catalog_keeps_the_curated_list_when_the_service_is_unreachable():
    calls = []

    def unreachable():
        calls.append(1)
        raise OSError("Name or service not known")

    catalog = tts.VoiceCatalog(fetch=unreachable)
    assert not catalog.refresh() and not catalog.refresh()
    assert len(calls) == 1 and catalog.source == "curated"
    assert catalog.find(tts.DEFAULT_VOICE) is not None and len(catalog.languages()) == len(tts.CURATED)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")
def test_speaking_leaves_no_file_descriptor_open(tmp_path):
    """A server speaks for months: each call used to leave mkstemp's descriptors open (two per offline call)."""

    def unreachable(text, voice, rate, target):
        raise OSError("offline")

    def service(text, voice, rate, target):
        target.write_bytes(b"ID3 pretend mp3")

    tts.speak("Hi.", tmp_path, online=unreachable)  # warm-up: espeak-ng's voice list, imports
    for online in (unreachable, service):
        before = _open_fds()
        for index in range(FD_CALLS):
            folder = tmp_path / f"{online.__name__}-{index}"
            folder.mkdir()
            speech = tts.speak("Hi.", folder, online=online)
            assert speech.engine == (tts.ENGINE_ESPEAK if online is unreachable else tts.ENGINE_EDGE)
        assert _open_fds() == before, online.__name__
