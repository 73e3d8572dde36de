"""Probing speech files: a plain PCM WAV from its header (no ffprobe process), everything else through ffprobe."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import write_pcm16_wav
from media_helpers import ffmpeg

from lipsync import mediainfo, video
from lipsync.errors import LipSyncError


def _counting_ffprobe(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    real = mediainfo._ffprobe
    monkeypatch.setattr(mediainfo, "_ffprobe", lambda path: calls.append(path) or real(path))
    return calls


def _pcm16(path: Path, rate: int, channels: int, seconds: float) -> Path:
    return write_pcm16_wav(path, np.sin(np.arange(int(rate * seconds) * channels) / 7.0) * 9000, rate, channels)


def _converted(source: Path, target: Path, codec: str) -> Path:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), "-c:a", codec,
                    str(target)], check=True)  # fmt: skip
    return target


@pytest.mark.parametrize("rate,channels", [(16000, 1), (22050, 1), (44100, 2)])
def test_a_pcm_wav_is_described_from_its_header_as_ffprobe_describes_it(tmp_path: Path, monkeypatch, rate: int,
                                                                        channels: int) -> None:  # fmt: skip
    path = _pcm16(tmp_path / "speech.wav", rate, channels, 1.25)
    calls = _counting_ffprobe(monkeypatch)
    info = video.probe(path, require_video=False)
    assert calls == [], "a PCM WAV needs no ffprobe process"
    data, _ = mediainfo._ffprobe(path)
    expected = mediainfo.from_ffprobe(path, data)
    assert (info.has_audio, info.has_video, info.audio_sample_rate, info.audio_channels) == (
        expected.has_audio, expected.has_video, rate, channels) == (True, False, rate, channels)
    assert info.audio_duration == pytest.approx(expected.audio_duration, abs=1e-6)
    assert info.audio_duration == pytest.approx(1.25, abs=1 / rate)


def test_other_wavs_and_damaged_ones_go_to_ffprobe(tmp_path: Path, monkeypatch) -> None:
    plain = _pcm16(tmp_path / "speech.wav", 16000, 1, 1.0)
    floats = _converted(plain, tmp_path / "float.wav", "pcm_f32le")  # not PCM to the wave module
    wide = _converted(plain, tmp_path / "wide.wav", "pcm_s24le")  # WAVE_FORMAT_EXTENSIBLE, as ffmpeg writes 24 bits
    cut = tmp_path / "cut.wav"  # its header promises a second, the file holds a tenth of it
    cut.write_bytes(plain.read_bytes()[:3200])
    calls = _counting_ffprobe(monkeypatch)
    assert video.probe(floats, require_video=False).audio_sample_rate == 16000
    assert video.probe(wide, require_video=False).audio_sample_rate == 16000
    video.probe(cut, require_video=False)
    assert calls == [floats, wide, cut]
    garbage = tmp_path / "noise.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 4)
    with pytest.raises(LipSyncError, match="cannot be read"):
        video.probe(garbage, require_video=False)


def test_a_wav_given_as_the_face_is_refused_without_ffprobe(tmp_path: Path, monkeypatch) -> None:
    path = _pcm16(tmp_path / "face.mp4", 16000, 1, 0.5)  # by its content, not its name
    calls = _counting_ffprobe(monkeypatch)
    with pytest.raises(LipSyncError, match="has no video stream"):
        video.probe(path)
    assert calls == []


def test_an_anamorphic_video_s_pixel_aspect_is_probed(tmp_path: Path) -> None:
    """A DVD's 16:9 PAL frame is 720×576 stored pixels shown at 1024×576: each pixel 64/45 as wide as tall."""
    clip = tmp_path / "pal.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=720x576:rate=25", "-frames:v", "3", "-vf", "setsar=64/45", clip)
    info = video.probe(clip)
    assert (info.width, info.height, info.pixel_aspect) == (720, 576, Fraction(64, 45))
    square = tmp_path / "square.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=720x576:rate=25", "-frames:v", "3", square)
    assert video.probe(square).pixel_aspect == 1


@pytest.mark.parametrize("stated, rotation, expected", [
    ("64:45", 0, Fraction(64, 45)),
    ("64:45", 90, Fraction(45, 64)),  # the picture is turned: its pixels are too
    ("4:3", 270, Fraction(3, 4)),
    ("0:1", 0, Fraction(1)),  # ffprobe's "unknown"
    ("N/A", 0, Fraction(1)),
    (None, 0, Fraction(1)),
    ("100:1", 0, Fraction(1)),  # a damaged header, not a lens
])
def test_pixel_aspect_from_ffprobe_s_words(stated, rotation: int, expected: Fraction) -> None:
    stream = {} if stated is None else {"sample_aspect_ratio": stated}
    assert mediainfo._pixel_aspect(stream, rotation) == expected


def test_an_audio_file_s_cover_art_is_a_picture_face(tmp_path: Path, astronaut_bgr: np.ndarray) -> None:
    """A podcast episode's cover can speak the episode: an mp3's artwork is the face (it was "has no video
    stream"); the same file is still the speech, and an mp3 without artwork is still no face."""
    import cv2

    photo, speech = tmp_path / "cover.png", _pcm16(tmp_path / "speech.wav", 16000, 1, 0.5)
    cv2.imwrite(str(photo), astronaut_bgr)
    episode, bare = tmp_path / "episode.mp3", tmp_path / "bare.mp3"
    ffmpeg("-i", speech, "-i", photo, "-map", "0:a", "-map", "1:v", "-c:v", "mjpeg", "-q:v", "2",
           "-disposition:v", "attached_pic", episode)  # fmt: skip
    ffmpeg("-i", speech, bare)
    face = video.probe(episode)
    assert face.is_image and face.picture is not None and (face.width, face.height) == (512, 512)
    assert np.abs(face.picture.astype(int) - astronaut_bgr).mean() < 4, "the cover's pixels (as JPEG keeps them)"
    assert video.probe(episode, require_video=False).has_audio
    with pytest.raises(LipSyncError, match="has no video stream"):
        video.probe(bare)
