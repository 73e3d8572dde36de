"""Tests for lipsync.audio: decoding through ffmpeg, Wav2Lip's mel, and the per-frame mel windows."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import write_pcm16_wav

from lipsync import audio
from lipsync.ffmpeg import AUDIO_FROM_FILE_START
from lipsync.errors import LipSyncError

FIXTURES = Path(__file__).parents[2] / "shared" / "fixtures"
TONE_HZ = 1000
TONE_SECONDS = 1.0
DURATION_TOLERANCE = 0.030  # seconds


# ---------------------------------------------------------------- helpers


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly with an argument list, failing the test on error."""
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def tone_source(seconds: float = TONE_SECONDS, rate: int = 44100) -> list[str]:
    """ffmpeg input arguments for a 1 kHz sine."""
    return ["-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:sample_rate={rate}:duration={seconds}"]


def peak_hz(wav: np.ndarray) -> float:
    """Frequency of the strongest spectral bin, assuming 16 kHz samples."""
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.argmax(spectrum) * audio.SAMPLE_RATE / len(wav))


def band_energy_fraction(wav: np.ndarray, centre: float, half_width: float = 50.0) -> float:
    """Share of the signal's energy within centre ± half_width Hz."""
    power = np.abs(np.fft.rfft(wav)) ** 2
    freqs = np.fft.rfftfreq(len(wav), 1 / audio.SAMPLE_RATE)
    return float(power[np.abs(freqs - centre) <= half_width].sum() / power.sum())


def wav_seconds(path: Path) -> float:
    """Duration from a wav header."""
    with wave.open(str(path)) as f:
        return f.getnframes() / f.getframerate()


def reference_windows(mel: np.ndarray, fps: float) -> list[np.ndarray]:
    """Direct transcription of Wav2Lip inference.py's mel_chunks loop."""
    chunks = []
    mel_idx_multiplier = 80.0 / fps
    i = 0
    while True:
        start_idx = int(i * mel_idx_multiplier)
        if start_idx + 16 > len(mel[0]):
            chunks.append(mel[:, len(mel[0]) - 16 :])
            break
        chunks.append(mel[:, start_idx : start_idx + 16])
        i += 1
    return chunks


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tone and speech files in several formats, made once with ffmpeg and espeak-ng."""
    d = tmp_path_factory.mktemp("media")
    tone = d / "tone.wav"
    ffmpeg(*tone_source(), str(tone))
    for name, codec in [("tone.mp3", "libmp3lame"), ("tone.ogg", "libopus"), ("tone.opus", "libopus"),
                        ("tone.m4a", "aac"), ("tone.flac", "flac"), ("tone.webm", "libopus")]:  # fmt: skip
        ffmpeg("-i", str(tone), "-c:a", codec, str(d / name))
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size=64x64:rate=25:duration={TONE_SECONDS}", *tone_source(),
           "-c:v", "mpeg4", "-c:a", "aac", "-shortest", str(d / "tone_video.mp4"))  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=0.5", "-c:v", "mpeg4", str(d / "silent.mp4"))
    ffmpeg(*tone_source(rate=96000), "-af", "pan=7.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0|c6=c0|c7=c0",
           "-ar", "96000", str(d / "tone_8ch_96k.wav"))  # fmt: skip
    speech = d / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "hello, this is a lip sync test"], check=True)
    ffmpeg("-i", str(speech), "-c:a", "libmp3lame", str(d / "speech.mp3"))
    ffmpeg("-i", str(speech), "-c:a", "aac", str(d / "speech.m4a"))
    return {p.name: p for p in d.iterdir()}


# ---------------------------------------------------------------- mel spectrogram


def test_mel_matches_wav2lip_reference() -> None:
    signal = np.load(FIXTURES / "mel" / "signal_16k.npy")
    expected = np.load(FIXTURES / "mel" / "mel_reference.npy")
    mel = audio.melspectrogram(signal)
    assert mel.shape == expected.shape
    assert mel.dtype == np.float32 and mel.flags.c_contiguous
    assert np.abs(mel - expected).max() <= 1e-4


@pytest.mark.parametrize("n_samples", [1, 199, 200, 401, 16000, 16123])
def test_mel_has_80_columns_per_second(n_samples: int) -> None:
    rng = np.random.default_rng(n_samples)
    mel = audio.melspectrogram(rng.standard_normal(n_samples).astype(np.float32) * 0.1)
    assert mel.shape == (audio.N_MELS, 1 + n_samples // audio.HOP)
    assert np.isfinite(mel).all()


def test_digital_silence_is_finite_and_minimal() -> None:
    mel = audio.melspectrogram(np.zeros(audio.SAMPLE_RATE, dtype=np.float32))
    assert np.isfinite(mel).all()
    assert np.all(mel == -audio.MAX_ABS)


def test_non_finite_samples_are_refused() -> None:
    wav = np.zeros(1000, dtype=np.float32)
    wav[10] = np.nan
    with pytest.raises(LipSyncError, match="NaN"):
        audio.melspectrogram(wav)


def test_mel_of_tone_peaks_in_the_band_of_its_frequency() -> None:
    t = np.arange(audio.SAMPLE_RATE) / audio.SAMPLE_RATE
    mel = audio.melspectrogram(0.5 * np.sin(2 * np.pi * TONE_HZ * t).astype(np.float32))
    band = int(np.argmax(mel[:, 40]))
    centres = audio.mel_filterbank().argmax(axis=1) * audio.SAMPLE_RATE / audio.N_FFT
    assert abs(centres[band] - TONE_HZ) < 60


# ---------------------------------------------------------------- per-frame windows

FPS_VALUES = [25, 29.97, 30000 / 1001, 30, 60, 12.5, 24, 23.976, 7.3, 100]


@pytest.mark.parametrize("fps", FPS_VALUES)
@pytest.mark.parametrize("n_cols", [16, 17, 40, 96, 185, 1001])
def test_windows_follow_the_reference_loop(fps: float, n_cols: int) -> None:
    mel = np.arange(audio.N_MELS * n_cols, dtype=np.float32).reshape(audio.N_MELS, n_cols)
    expected = reference_windows(mel, fps)
    assert audio.frame_count(n_cols, fps) == len(expected)
    got = list(audio.mel_windows(mel, fps))
    assert len(got) == len(expected)
    for i, window in enumerate(expected):
        assert np.array_equal(got[i], window), f"frame {i}"
    np.testing.assert_array_equal(audio.mel_window(mel, len(expected) - 1, fps), mel[:, -audio.MEL_STEP :])
    batch = audio.mel_batch(mel, 1, len(expected) + 5, fps)
    assert batch.shape == (len(expected) - 1, audio.N_MELS, audio.MEL_STEP)
    np.testing.assert_array_equal(batch, np.stack(expected[1:]))


def test_frame_count_matches_the_reference_over_many_lengths() -> None:
    for fps in FPS_VALUES:
        for n_cols in range(16, 700, 7):
            assert audio.frame_count(n_cols, fps) == len(reference_windows(np.zeros((1, n_cols)), fps)), (fps, n_cols)


def test_window_on_exact_fit_repeats_the_last_columns() -> None:
    # 80 columns at 80 fps: frame 64 starts at 64 and fits exactly; frame 65 is the clamped, final window
    mel = np.arange(audio.N_MELS * 80, dtype=np.float32).reshape(audio.N_MELS, 80)
    assert audio.frame_count(80, 80.0) == 66
    np.testing.assert_array_equal(audio.mel_window(mel, 64, 80.0), audio.mel_window(mel, 65, 80.0))


def test_short_audio_is_padded_with_silence() -> None:
    mel = audio.melspectrogram(np.full(1600, 0.1, dtype=np.float32))  # 0.1 s -> 9 columns
    assert mel.shape[1] < audio.MEL_STEP
    windows = list(audio.mel_windows(mel, 25))
    assert len(windows) >= 1 and len(windows) == audio.frame_count(mel.shape[1], 25)
    first = windows[0]
    assert first.shape == (audio.N_MELS, audio.MEL_STEP)
    np.testing.assert_array_equal(first[:, : mel.shape[1]], mel)
    assert np.all(first[:, mel.shape[1] :] == -audio.MAX_ABS)


def test_window_index_out_of_range_and_bad_fps() -> None:
    mel = np.zeros((audio.N_MELS, 40), dtype=np.float32)
    with pytest.raises(IndexError):
        audio.mel_window(mel, audio.frame_count(40, 25), 25)
    with pytest.raises(IndexError):
        audio.mel_window(mel, -1, 25)
    with pytest.raises(LipSyncError, match="frame rate"):
        audio.frame_count(40, 0)


# ---------------------------------------------------------------- decoding


def assert_is_one_second_tone(wav: np.ndarray) -> None:
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(audio.duration(wav) - TONE_SECONDS) <= DURATION_TOLERANCE
    assert abs(peak_hz(wav) - TONE_HZ) < 5
    assert band_energy_fraction(wav, TONE_HZ) > 0.9


@pytest.mark.parametrize(
    "name", ["tone.wav", "tone.mp3", "tone.ogg", "tone.opus", "tone.m4a", "tone.flac", "tone.webm", "tone_video.mp4"]
)
def test_decodes_formats_to_16k_mono(media: dict[str, Path], name: str) -> None:
    assert_is_one_second_tone(audio.load_audio(media[name]))


def test_decodes_8_channel_96k(media: dict[str, Path]) -> None:
    assert_is_one_second_tone(audio.load_audio(media["tone_8ch_96k.wav"]))


@pytest.mark.parametrize("name", ["speech.wav", "speech.mp3", "speech.m4a"])
def test_decodes_speech_with_its_duration(media: dict[str, Path], name: str) -> None:
    wav = audio.load_audio(media[name])
    assert abs(audio.duration(wav) - wav_seconds(media["speech.wav"])) <= DURATION_TOLERANCE
    assert np.sqrt(np.mean(wav**2)) > 0.01
    assert audio.melspectrogram(wav).max() > 0  # real speech energy, not silence


def test_sound_that_starts_after_its_file_keeps_its_lead_as_silence(media: dict[str, Path], tmp_path: Path) -> None:
    """A recording whose sound begins 0.5 s after its picture: the speech decoded is the file's, from its start
    (it began at the first sample, 0.5 s early against the muxed track); sound that starts with its file decodes
    bit for bit as it did."""
    late = tmp_path / "late.mov"  # its sound as PCM: the same samples as the WAV
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=size=64x64:rate=25:duration=1.5",
                    "-itsoffset", "0.5", "-i", str(media["speech.wav"]), "-map", "0:v", "-map", "1:a",
                    "-c:v", "libx264", "-c:a", "pcm_s16le", str(late)], check=True)  # fmt: skip
    wav, speech = audio.load_audio(late), audio.load_audio(media["speech.wav"])
    lead = int(0.5 * audio.SAMPLE_RATE)
    assert abs(len(wav) - lead - len(speech)) <= 1
    assert np.abs(wav[:lead - 1]).max() == 0 and np.abs(wav[lead + 1 : lead + 1 + 8000]).max() > 0.01
    offset = len(wav) - len(speech)
    assert np.abs(wav[offset:] - speech).max() < 1e-4, "the speech itself, after its lead"
    plain = [arg for arg in audio.decode_args(media["speech.mp3"]) if arg not in ("-af", AUDIO_FROM_FILE_START)]
    as_before = subprocess.run(plain, capture_output=True, check=True).stdout
    assert audio.load_audio(media["speech.mp3"]).tobytes() == as_before


@pytest.mark.parametrize("name", ["my voice ☺.wav", "-dash.wav", "a:b.wav"])
def test_awkward_file_names(media: dict[str, Path], name: str, tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / name
    target.write_bytes(media["tone.wav"].read_bytes())
    assert_is_one_second_tone(audio.load_audio(target))
    monkeypatch.chdir(tmp_path)
    assert_is_one_second_tone(audio.load_audio(name))  # relative: must not be read as an option or protocol


def test_video_without_audio_says_so(media: dict[str, Path]) -> None:
    with pytest.raises(LipSyncError, match="silent.mp4 has no audio"):
        audio.load_audio(media["silent.mp4"])


def test_text_file_is_undecodable(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(LipSyncError, match=r"could not decode the audio in notes\.wav \(ffmpeg: .+\); is it a complete") as caught:
        audio.load_audio(text)
    assert "file:" not in str(caught.value) and "\n" not in str(caught.value), "one plain line"


def test_empty_audio_track(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
    with pytest.raises(LipSyncError, match="no audio samples"):
        audio.load_audio(empty)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LipSyncError, match="not found"):
        audio.load_audio(tmp_path / "nope.wav")


def test_missing_ffmpeg(media: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LipSyncError, match=r"^ffmpeg was not found: install ffmpeg .* ffmpeg and ffprobe are on PATH$"):
        audio.load_audio(media["tone.wav"])


# ---------------------------------------------------------------- Wav2Lip's own format, without ffmpeg


def _pcm16_wav(path: Path, rate: int = audio.SAMPLE_RATE, channels: int = 1, seconds: float = 1.3) -> Path:
    """A 16-bit PCM WAV of a loud chirp reaching both extremes (-32768 and 32767)."""
    count = int(rate * seconds) * channels
    return write_pcm16_wav(path, np.sin(np.linspace(0, 900, count) * np.linspace(1, 3, count)) * 40000, rate, channels)


def _counting_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    real = audio.ffmpeg.run
    monkeypatch.setattr(audio.ffmpeg, "run", lambda args: calls.append(args) or real(args))
    return calls


def test_a_16k_mono_pcm_wav_is_read_without_ffmpeg_bit_equal_to_its_decoding(tmp_path: Path, monkeypatch) -> None:
    path = _pcm16_wav(tmp_path / "native.wav")
    calls = _counting_ffmpeg(monkeypatch)
    wav = audio.load_audio(path)
    assert calls == [], "Wav2Lip's own format needs no ffmpeg process"
    decoded = audio._ffmpeg_decode(str(path), path.name)
    assert wav.dtype == np.float32 and wav.shape == decoded.shape
    assert np.array_equal(wav, decoded), "the mel (and so every mouth) must not depend on who decoded the file"
    assert wav.min() == -1.0 and wav.max() == np.float32(32767 / 32768)


@pytest.mark.parametrize("rate,channels", [(22050, 1), (16000, 2), (8000, 1)])
def test_other_wavs_are_decoded_by_ffmpeg(tmp_path: Path, monkeypatch, rate: int, channels: int) -> None:
    path = _pcm16_wav(tmp_path / "other.wav", rate, channels)
    calls = _counting_ffmpeg(monkeypatch)
    wav = audio.load_audio(path)
    assert len(calls) == 1
    assert abs(audio.duration(wav) - 1.3) < DURATION_TOLERANCE


def test_a_wav_shorter_than_its_header_is_left_to_ffmpeg(tmp_path: Path, monkeypatch) -> None:
    path = _pcm16_wav(tmp_path / "cut.wav")
    path.write_bytes(path.read_bytes()[: -4000])  # a download cut short: the header still promises 1.3 s
    calls = _counting_ffmpeg(monkeypatch)
    wav = audio.load_audio(path)
    assert len(calls) == 1, "ffmpeg decides what a damaged file holds"
    assert abs(audio.duration(wav) - (1.3 - 2000 / audio.SAMPLE_RATE)) < DURATION_TOLERANCE
