"""Text to speech: edge-tts neural voices, with espeak-ng speaking offline when the service cannot be reached."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import LipSyncError, first_line

log = logging.getLogger(__name__)

DEFAULT_VOICE = "en-US-EmmaMultilingualNeural"  # edge-tts's own default
DEFAULT_LOCALE = "en-US"
MIN_RATE, MAX_RATE = -50, 100  # speaking rate, % faster (+) or slower (-) than normal
EDGE_CONNECT_TIMEOUT_S = 5  # a firewalled network should not hold a request for long
EDGE_TIMEOUT_S = 60  # whole synthesis, connection included
LIST_TIMEOUT_S = 5  # fetching the voice list
REFRESH_EVERY_S = 24 * 3600  # the service's voice list changes rarely
RETRY_AFTER_S = 10 * 60  # after a failed refresh, keep the list we have this long
ESPEAK_WPM = 175  # espeak-ng's normal speed, words per minute
ESPEAK_MIN_WPM = 80  # espeak-ng's slowest
ESPEAK_FALLBACK_VOICE = "en-us"
ESPEAK_ALIASES = {"en": "en-us", "zh": "cmn", "zh-hk": "yue", "es-mx": "es-419", "es-us": "es-419", "fr": "fr-fr"}
VOICE_PATTERN = re.compile(r"^[a-z]{2,3}(-[A-Za-z]+)+-[A-Za-z]+Neural$")
SPEECH_PREFIX = "speech-"  # of the files speak() writes

ENGINE_EDGE = "edge-tts"
ENGINE_ESPEAK = "espeak-ng"

OnlineSpeaker = Callable[[str, str, int, Path], None]  # (text, voice, rate %, target mp3); raises on failure

# Curated edge-tts voices, so the picker renders without network: locale → (language, voices as name:gender).
CURATED: Dict[str, Tuple[str, str]] = {
    "en-US": ("English (United States)", "EmmaMultilingual:F AndrewMultilingual:M Ava:F Guy:M Jenny:F Christopher:M"),
    "en-GB": ("English (United Kingdom)", "Sonia:F Ryan:M Libby:F"),
    "en-AU": ("English (Australia)", "Natasha:F WilliamMultilingual:M"),
    "en-IN": ("English (India)", "Neerja:F Prabhat:M"),
    "es-ES": ("Spanish (Spain)", "Elvira:F Alvaro:M"),
    "es-MX": ("Spanish (Mexico)", "Dalia:F Jorge:M"),
    "fr-FR": ("French (France)", "VivienneMultilingual:F RemyMultilingual:M Denise:F Henri:M"),
    "de-DE": ("German (Germany)", "SeraphinaMultilingual:F FlorianMultilingual:M Katja:F Conrad:M"),
    "it-IT": ("Italian (Italy)", "Elsa:F GiuseppeMultilingual:M Isabella:F Diego:M"),
    "pt-BR": ("Portuguese (Brazil)", "ThalitaMultilingual:F Antonio:M Francisca:F"),
    "pt-PT": ("Portuguese (Portugal)", "Raquel:F Duarte:M"),
    "nl-NL": ("Dutch (Netherlands)", "Colette:F Maarten:M Fenna:F"),
    "pl-PL": ("Polish (Poland)", "Zofia:F Marek:M"),
    "ru-RU": ("Russian (Russia)", "Svetlana:F Dmitry:M"),
    "uk-UA": ("Ukrainian (Ukraine)", "Polina:F Ostap:M"),
    "tr-TR": ("Turkish (Türkiye)", "Emel:F Ahmet:M"),
    "sv-SE": ("Swedish (Sweden)", "Sofie:F Mattias:M"),
    "el-GR": ("Greek (Greece)", "Athina:F Nestoras:M"),
    "ar-SA": ("Arabic (Saudi Arabia)", "Zariyah:F Hamed:M"),
    "ar-EG": ("Arabic (Egypt)", "Salma:F Shakir:M"),
    "hi-IN": ("Hindi (India)", "Swara:F Madhur:M"),
    "id-ID": ("Indonesian (Indonesia)", "Gadis:F Ardi:M"),
    "vi-VN": ("Vietnamese (Vietnam)", "HoaiMy:F NamMinh:M"),
    "zh-CN": ("Chinese (Mainland)", "Xiaoxiao:F Yunxi:M Xiaoyi:F Yunyang:M"),
    "ja-JP": ("Japanese (Japan)", "Nanami:F Keita:M"),
    "ko-KR": ("Korean (Korea)", "SunHi:F InJoon:M HyunsuMultilingual:M"),
}  # fmt: skip


@dataclass(frozen=True)
class Voice:
    """One edge-tts voice."""

    name: str  # edge-tts ShortName, e.g. en-US-EmmaMultilingualNeural
    locale: str  # e.g. en-US
    gender: str  # "Female" or "Male"

    @property
    def label(self) -> str:
        """'Emma (female, multilingual)' for a picker."""
        given = self.name[len(self.locale) + 1 :].removesuffix("Neural")
        notes = [self.gender.lower()] * bool(self.gender) + ["multilingual"] * given.endswith("Multilingual")
        name = given.removesuffix("Multilingual")
        return f"{name} ({', '.join(notes)})" if notes else name


@dataclass(frozen=True)
class Speech:
    """A spoken text: the file, which engine spoke it, and why edge-tts did not, if it did not."""

    path: Path
    engine: str  # ENGINE_EDGE or ENGINE_ESPEAK
    voice: str  # the edge-tts voice, or the espeak-ng voice that stood in for it
    fallback_reason: Optional[str] = None


def curated_voices() -> List[Voice]:
    """The built-in voice list (no network)."""
    gender = {"F": "Female", "M": "Male"}
    return [
        Voice(f"{locale}-{given}Neural", locale, gender[g])
        for locale, (_, table) in CURATED.items()
        for given, g in (item.split(":") for item in table.split())
    ]


def voices_from_service(entries: Iterable[dict]) -> Tuple[List[Voice], Dict[str, str]]:
    """edge-tts list_voices() entries → voices and locale labels (from 'Microsoft X Online (Natural) - Language')."""
    voices, labels = [], {}
    for entry in entries:
        name, locale = entry.get("ShortName", ""), entry.get("Locale", "")
        if not VOICE_PATTERN.match(name) or not name.startswith(f"{locale}-"):
            continue
        voices.append(Voice(name, locale, entry.get("Gender", "")))
        friendly = entry.get("FriendlyName", "")
        if " - " in friendly:
            labels.setdefault(locale, friendly.split(" - ", 1)[1])
    return voices, labels


def _fetch_service_voices() -> List[dict]:
    import asyncio  # here, not at the top: 33 ms of every command line's start-up

    import edge_tts

    return asyncio.run(asyncio.wait_for(edge_tts.list_voices(), LIST_TIMEOUT_S))


class VoiceCatalog:
    """The voices a picker offers: the curated list until the service's list has been fetched (thread-safe)."""

    def __init__(self, fetch: Optional[Callable[[], List[dict]]] = None) -> None:
        self._fetch = fetch or _fetch_service_voices
        self._voices = curated_voices()
        self._labels = {locale: label for locale, (label, _) in CURATED.items()}
        self._next_refresh = 0.0
        self._lock = threading.Lock()
        self.source = "curated"

    def refresh(self) -> bool:
        """Fetch the service's list if it is due; False when the service could not be reached."""
        with self._lock:
            if time.monotonic() < self._next_refresh:
                return self.source == "service"
            try:
                voices, labels = voices_from_service(self._fetch())
            except Exception as exc:  # offline, blocked or changed service: keep what we have
                log.info("edge-tts voice list not refreshed: %s", first_line(exc))
                self._next_refresh = time.monotonic() + RETRY_AFTER_S
                return False
            if voices:
                self._voices, self._labels = voices, {**labels, **self._labels}
                self.source = "service"
            self._next_refresh = time.monotonic() + REFRESH_EVERY_S
            return bool(voices)

    def languages(self) -> List[Tuple[str, str]]:
        """(label, locale) pairs, sorted by label."""
        locales = {v.locale for v in self._voices}
        return sorted(((self._labels.get(loc, loc), loc) for loc in locales), key=lambda pair: pair[0])

    def voices(self, locale: str) -> List[Voice]:
        return [v for v in self._voices if v.locale == locale]

    def find(self, name: str) -> Optional[Voice]:
        return next((v for v in self._voices if v.name == name), None)


_catalog = VoiceCatalog()


def catalog() -> VoiceCatalog:
    """The process-wide voice catalog."""
    return _catalog


def locale_of(voice: str) -> str:
    """'en-US-EmmaMultilingualNeural' → 'en-US' (everything before the given name)."""
    return voice.rsplit("-", 1)[0]


def edge_rate(percent: int) -> str:
    """edge-tts's rate string: +10%, -20%, +0%."""
    return f"{int(percent):+d}%"


def espeak_speed(percent: int) -> int:
    """espeak-ng words per minute for the same rate change."""
    return max(ESPEAK_MIN_WPM, round(ESPEAK_WPM * (1 + percent / 100)))


@lru_cache(maxsize=1)
def espeak_voices() -> Tuple[str, ...]:
    """Language codes of the installed espeak-ng voices ('en-us', 'fr-fr', 'cmn', ...)."""
    try:
        out = subprocess.run(["espeak-ng", "--voices"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ()
    return tuple(line.split()[1].lower() for line in out.splitlines()[1:] if len(line.split()) > 1)


def espeak_voice(locale: str, installed: Sequence[str] = ()) -> str:
    """The espeak-ng voice closest to an edge-tts locale: exact, alias, language, else English."""
    installed = installed or espeak_voices()
    full = locale.lower()
    language = full.split("-")[0]
    for candidate in (full, ESPEAK_ALIASES.get(full), ESPEAK_ALIASES.get(language), language):
        if candidate and candidate in installed:
            return candidate
    return ESPEAK_FALLBACK_VOICE


def check_request(text: str, voice: str, rate: int) -> str:
    """The text to speak, stripped; LipSyncError for empty text, a malformed voice or an out-of-range rate."""
    words = " ".join(text.split())
    if not words:
        raise LipSyncError("There is no text to speak: type a sentence, or give an audio file instead.")
    if not VOICE_PATTERN.match(voice):
        raise LipSyncError(f"{voice!r} is not an edge-tts voice name (like {DEFAULT_VOICE}).")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise LipSyncError(f"The speaking rate must be between {MIN_RATE}% and +{MAX_RATE}% (got {rate}%).")
    return words


def speak(
    text: str, out_dir: Path, voice: str = DEFAULT_VOICE, rate: int = 0, online: Optional[OnlineSpeaker] = None
) -> Speech:
    """Speak `text` into a file in out_dir: edge-tts (mp3, 24 kHz), else espeak-ng (wav, 22 kHz) offline."""
    words = check_request(text, voice, int(rate))
    online = online or edge_speak
    target = _new_file(out_dir, ".mp3")
    try:
        online(words, voice, int(rate), target)
        if target.stat().st_size > 0:
            return Speech(target, ENGINE_EDGE, voice)
        problem = "the edge-tts service returned no audio"
    except Exception as exc:  # network, service and library errors all mean: speak offline instead
        problem = _edge_problem(exc)
    target.unlink(missing_ok=True)  # edge-tts opens the file before connecting: a failure leaves 0 bytes
    return espeak_speak(words, voice, int(rate), out_dir, problem)


def _new_file(out_dir: Path, suffix: str) -> Path:
    """A new empty file of our own in out_dir (its name only: the descriptor is closed, the engines open it)."""
    descriptor, name = tempfile.mkstemp(prefix=SPEECH_PREFIX, suffix=suffix, dir=out_dir)
    os.close(descriptor)
    return Path(name)


def _edge_problem(exc: BaseException) -> str:
    """What went wrong with edge-tts, in words: unreachable (network, timeout) or failed (service, library)."""
    import asyncio

    if isinstance(exc, (OSError, asyncio.TimeoutError)):
        return f"the edge-tts service could not be reached ({first_line(exc)})"
    if isinstance(exc, ImportError):
        return "edge-tts is not installed"
    return f"edge-tts failed ({first_line(exc)})"


def edge_speak(text: str, voice: str, rate: int, target: Path) -> None:
    """edge-tts into target (mp3); raises on any failure, network or service."""
    import asyncio

    import edge_tts

    communicate = edge_tts.Communicate(
        text, voice, rate=edge_rate(rate), connect_timeout=EDGE_CONNECT_TIMEOUT_S, receive_timeout=EDGE_TIMEOUT_S
    )
    asyncio.run(asyncio.wait_for(communicate.save(str(target)), EDGE_TIMEOUT_S))


def espeak_speak(text: str, voice: str, rate: int, out_dir: Path, problem: Optional[str] = None) -> Speech:
    """espeak-ng into a wav in out_dir, in the language of the edge-tts voice asked for."""
    stand_in = espeak_voice(locale_of(voice))
    target = _new_file(out_dir, ".wav")
    command = ["espeak-ng", "-b", "1", "-v", stand_in, "-s", str(espeak_speed(rate)), "-w", str(target)]
    try:
        subprocess.run(command, input=text.encode(), check=True, capture_output=True)
    except FileNotFoundError as exc:
        target.unlink(missing_ok=True)
        raise LipSyncError(f"{problem or 'edge-tts was not used'}, and espeak-ng is not installed "
                           "(apt-get install espeak-ng).") from exc  # fmt: skip
    except subprocess.CalledProcessError as exc:
        target.unlink(missing_ok=True)
        detail = first_line(exc.stderr.decode(errors="replace"))
        raise LipSyncError(f"espeak-ng could not speak the text: {detail}") from exc
    return Speech(target, ENGINE_ESPEAK, stand_in, problem)
