"""16-bit mono WAV files, the one audio format the pipeline writes and reads back."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from .errors import InputError


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write float mono samples in [-1, 1], shape (num_samples,), as a 16-bit PCM WAV."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise InputError(f"audio must be mono (num_samples,), got shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise InputError("audio contains NaN/inf samples: regenerate the speech")
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(pcm.tobytes())


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """float32 mono samples (num_samples,) and the sample rate of a 16-bit PCM WAV."""
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        channels = wav.getnchannels()
        raw = wav.readframes(wav.getnframes())
    audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32767.0
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    return audio, rate
