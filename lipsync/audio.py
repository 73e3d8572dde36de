"""Audio in: decode any file with ffmpeg, compute Wav2Lip's mel spectrogram, cut it into per-frame windows."""

from __future__ import annotations

import os
import wave
from typing import Iterator, Optional, Union

import numpy as np

from lipsync import ffmpeg
from lipsync.errors import LipSyncError
from lipsync.types import MelWindow

# hard-coded audio hyperparameters: what the published Wav2Lip weights were trained with
SAMPLE_RATE = 16000  # samples per second
N_FFT = 800  # samples per STFT frame (50 ms)
HOP = 200  # samples between STFT frames (12.5 ms)
WIN = 800  # Hann window length, samples (= N_FFT)
N_MELS = 80  # mel bands
FMIN = 55.0  # Hz, lowest mel band edge
FMAX = 7600.0  # Hz, highest mel band edge
PREEMPHASIS = 0.97  # y[n] = x[n] - 0.97 * x[n-1]
REF_DB = 20.0  # dB subtracted after log compression
MIN_DB = -100.0  # dB floor; amplitude floor is 10 ** (MIN_DB / 20) = 1e-5
MAX_ABS = 4.0  # normalised mel lies in [-MAX_ABS, MAX_ABS]; -MAX_ABS is silence
MEL_STEP = 16  # mel columns per generator window (200 ms)
MEL_FPS = SAMPLE_RATE / HOP  # 80.0 mel columns per second
PCM16_SCALE = 1.0 / 32768  # 16-bit PCM to float, as ffmpeg converts it (an exact power of two: bit-equal)

_STFT_CHUNK = 1024  # STFT frames per rfft call: keeps scratch memory to a few MB
_NO_AUDIO_MARKERS = ("matches no streams", "does not contain any stream")

PathLike = Union[str, os.PathLike]


def decode_args(path: PathLike) -> list[str]:
    """ffmpeg arguments that write the first audio stream of `path` as 16 kHz mono float32 to stdout, from where
    the file starts (ffmpeg.AUDIO_FROM_FILE_START)."""
    return [*ffmpeg.head(), "-i", ffmpeg.file_arg(path), "-vn", "-map", "0:a:0", "-af", ffmpeg.AUDIO_FROM_FILE_START,
            "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1"]


def load_audio(path: PathLike) -> np.ndarray:
    """Decode the first audio track of any file ffmpeg reads (audio or video) to float32 mono at 16 kHz.

    Returns a 1-D float32 array of samples in about [-1, 1]. Raises LipSyncError when ffmpeg is
    missing, the file is missing, has no audio track, cannot be decoded or decodes to nothing.
    """
    path = os.path.abspath(os.fspath(path))
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise LipSyncError(f"audio file not found: {path}")
    wav = _native_wav(path)
    if wav is None:
        wav = _ffmpeg_decode(path, name)
    if wav.size == 0:
        raise LipSyncError(f"{name} decoded to no audio samples; is the audio track empty?")
    return wav


def _native_wav(path: str) -> Optional[np.ndarray]:
    """The samples of a WAV already in the networks' format (16-bit PCM, 16 kHz, mono: what Wav2Lip's own
    tools write), read without starting ffmpeg and equal to its decoding bit for bit; None for any other file, or
    a header promising no samples (as streaming writers leave it) or more than the file holds: ffmpeg decodes those."""
    try:
        with wave.open(path, "rb") as source:
            native = (source.getsampwidth(), source.getframerate(), source.getnchannels()) == (2, SAMPLE_RATE, 1)
            frames = source.getnframes()
            data = source.readframes(frames) if native else b""
    except (wave.Error, EOFError, OSError, ValueError):
        return None
    if not native or not frames or len(data) != 2 * frames:
        return None
    return np.frombuffer(data, dtype="<i2").astype(np.float32) * np.float32(PCM16_SCALE)


def _ffmpeg_decode(path: str, name: str) -> np.ndarray:
    """Any audio (or video's audio) ffmpeg reads, as 16 kHz mono float32; LipSyncError when it cannot."""
    proc = ffmpeg.run(decode_args(path))
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", errors="replace")
        if any(marker in stderr for marker in _NO_AUDIO_MARKERS):
            raise LipSyncError(f"{name} has no audio track; give a file with sound (wav, mp3, m4a, a video with audio)")
        said = ffmpeg.tail(stderr, path)
        raise LipSyncError(f"could not decode the audio in {name} (ffmpeg: {said}); is it a complete audio or video file?")
    wav = np.frombuffer(proc.stdout, dtype=np.float32).copy()
    return np.nan_to_num(wav, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)


def duration(wav: np.ndarray) -> float:
    """Length of 16 kHz samples in seconds."""
    return len(wav) / SAMPLE_RATE


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa's htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    log_part = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of _hz_to_mel."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), mel * f_sp)


def mel_filterbank() -> np.ndarray:
    """(N_MELS, N_FFT//2+1) float32 triangular filters with Slaney area normalisation (librosa's mel)."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def _hann() -> np.ndarray:
    """Periodic Hann window of WIN samples (scipy/librosa get_window('hann', fftbins=True))."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN) / WIN)).astype(np.float32)


def _stft_magnitude(signal: np.ndarray) -> np.ndarray:
    """|STFT| as (1 + len//HOP, N_FFT//2+1), time first; centred with reflect padding like librosa 0.7."""
    padded = np.pad(signal, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    window = _hann()
    out = np.empty((len(frames), N_FFT // 2 + 1), dtype=np.float32)
    for start in range(0, len(frames), _STFT_CHUNK):
        chunk = slice(start, start + _STFT_CHUNK)
        np.abs(np.fft.rfft(frames[chunk] * window, axis=1), out=out[chunk])
    return out


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's normalised log-mel spectrogram of 16 kHz samples.

    Parameters
    ----------
    wav : 1-D float array of 16 kHz samples (at least one sample).

    Returns
    -------
    (N_MELS, 1 + len(wav) // HOP) float32 in [-MAX_ABS, MAX_ABS], MEL_FPS columns per second.
    """
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if wav.size == 0:
        raise LipSyncError("the audio is empty; give at least a fraction of a second of sound")
    if not np.isfinite(wav).all():
        raise LipSyncError("the audio contains NaN or infinite samples; re-export it as a normal wav/mp3")
    emphasised = np.empty_like(wav)
    emphasised[0] = wav[0]
    np.subtract(wav[1:], PREEMPHASIS * wav[:-1], out=emphasised[1:])
    # einsum, not @: a matrix product this size goes to OpenBLAS's threads, which then spin ~0.1 s on the
    # cores the face encoder is about to use (it took 90 ms instead of 7), and whose sums depend on their count
    mel = np.einsum("mk,tk->mt", mel_filterbank(), _stft_magnitude(emphasised))
    db = 20.0 * np.log10(np.maximum(mel, 10.0 ** (MIN_DB / 20.0))) - REF_DB
    normalised = 2 * MAX_ABS * (db - MIN_DB) / -MIN_DB - MAX_ABS
    return np.ascontiguousarray(np.clip(normalised, -MAX_ABS, MAX_ABS), dtype=np.float32)


def _cols_per_frame(fps: float) -> float:
    """Mel columns per video frame, computed exactly as the reference does (80. / fps)."""
    if not fps > 0:
        raise LipSyncError(f"frame rate must be positive, got {fps}")
    return MEL_FPS / fps


def _padded(mel: np.ndarray) -> np.ndarray:
    """Mel with at least MEL_STEP columns: shorter ones are padded at the end with silence (-MAX_ABS)."""
    missing = MEL_STEP - mel.shape[1]
    if missing <= 0:
        return mel
    return np.pad(mel, ((0, 0), (0, missing)), constant_values=-MAX_ABS)


def frame_count(n_mel_cols: int, fps: float) -> int:
    """Number of video frames (= mel windows) the reference produces for a mel of n_mel_cols columns."""
    step = _cols_per_frame(fps)
    last_start = max(n_mel_cols, MEL_STEP) - MEL_STEP  # the largest start that still fits

    def overruns(i: int) -> bool:
        return int(i * step) > last_start

    i = int(last_start / step)  # close guess, then settle exactly with the reference's own rounding
    while i > 0 and overruns(i - 1):
        i -= 1
    while not overruns(i):
        i += 1
    return i + 1  # frame i is the clamped last window


def _window_start(i: int, n_cols: int, fps: float) -> int:
    """First mel column of frame i's window: int(i * 80/fps), clamped so the window ends at the last column."""
    return min(int(i * _cols_per_frame(fps)), n_cols - MEL_STEP)


def mel_window(mel: np.ndarray, i: int, fps: float) -> MelWindow:
    """The (N_MELS, MEL_STEP) window for video frame i, without materialising the others."""
    mel = _padded(mel)
    count = frame_count(mel.shape[1], fps)
    if not 0 <= i < count:
        raise IndexError(f"frame {i} out of range: this audio has {count} frames at {fps} fps")
    start = _window_start(i, mel.shape[1], fps)
    return mel[:, start : start + MEL_STEP]


def mel_batch(mel: np.ndarray, start: int, stop: int, fps: float) -> np.ndarray:
    """Windows for frames [start, stop) stacked as (B, N_MELS, MEL_STEP) float32, stop clipped to the count."""
    mel = _padded(mel)
    stop = min(stop, frame_count(mel.shape[1], fps))
    starts = [_window_start(i, mel.shape[1], fps) for i in range(start, stop)]
    if not starts:
        return np.empty((0, mel.shape[0], MEL_STEP), dtype=np.float32)
    return np.stack([mel[:, s : s + MEL_STEP] for s in starts]).astype(np.float32, copy=False)


def mel_windows(mel: np.ndarray, fps: float) -> Iterator[MelWindow]:
    """Yield each video frame's (N_MELS, MEL_STEP) window in order, as Wav2Lip's inference loop cuts them."""
    mel = _padded(mel)
    for i in range(frame_count(mel.shape[1], fps)):
        start = _window_start(i, mel.shape[1], fps)
        yield mel[:, start : start + MEL_STEP]
