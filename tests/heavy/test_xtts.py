"""XTTS v2 through coqui-tts, on a tiny random-weight checkpoint in the real layout
(xtts_v2/model.pth, config.json, vocab.json, speakers_xtts.pth), loaded by the
backend's own code path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

torch = pytest.importorskip("torch")
pytest.importorskip("TTS")

from persona_video.errors import BackendUnavailable, InputError  # noqa: E402
from persona_video.speech.xtts import XTTSBackend, validate_reference_wav  # noqa: E402

MAX_AUDIO_TOKENS = 40  # the tiny model's cap (conftest.tiny_xtts)


def _write_voice(path: Path, seconds: float, sample_rate: int = 16000, amplitude: float = 0.3) -> Path:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    voice = amplitude * np.sin(2 * np.pi * 160 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    soundfile.write(str(path), voice.astype(np.float32), sample_rate)
    return path


def test_tiny_checkpoint_loads_and_speaks(tiny_xtts: Path, tmp_path: Path) -> None:
    backend = XTTSBackend(tiny_xtts, device="cpu", language="en")
    assert backend.name == "xtts" and backend.sample_rate == 24000
    audio = backend.synthesize("Hello there, this is a test.", 1.0, _write_voice(tmp_path / "ref.wav", 4.0))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    # Random weights never say stop: the length is bounded by the capped token count.
    max_samples = (MAX_AUDIO_TOKENS + 1) * 1024 * 24000 / 22050
    assert 0.1 * 24000 < len(audio) <= max_samples
    # Loaded once per process: a second backend on the same folder reuses the model.
    from persona_video.speech import xtts

    before = len(xtts._MODELS)
    assert XTTSBackend(tiny_xtts, device="cpu").sample_rate == 24000
    assert len(xtts._MODELS) == before


def test_unknown_language_is_refused(tiny_xtts: Path) -> None:
    with pytest.raises(InputError, match="does not speak language 'xx'"):
        _ = XTTSBackend(tiny_xtts, device="cpu", language="xx").sample_rate


def test_reference_validation(tmp_path: Path) -> None:
    audio, rate = validate_reference_wav(_write_voice(tmp_path / "ok.wav", 5.0, sample_rate=44100))
    assert rate == 22050 and audio.dtype == np.float32 and abs(len(audio) - 5 * 22050) <= 2
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(InputError, match="not readable audio"):
        validate_reference_wav(corrupt)
    with pytest.raises(InputError, match="at least 3 s"):
        validate_reference_wav(_write_voice(tmp_path / "short.wav", 1.5))
    with pytest.raises(InputError, match="at most 30 s"):
        validate_reference_wav(_write_voice(tmp_path / "long.wav", 31.0))
    with pytest.raises(InputError, match="silent"):
        validate_reference_wav(_write_voice(tmp_path / "silent.wav", 5.0, amplitude=0.0))


def test_missing_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match=str(tmp_path / "model.pth")):
        XTTSBackend(tmp_path, device="cpu")


def test_broken_model_file_is_a_clear_error(tiny_xtts: Path, tmp_path: Path) -> None:
    broken = tmp_path / "xtts_v2"
    broken.mkdir()
    for name in ("config.json", "vocab.json", "speakers_xtts.pth"):
        (broken / name).write_bytes((tiny_xtts / name).read_bytes())
    torch.save({"model": {"gpt.nothing": torch.zeros(1)}}, broken / "model.pth")
    with pytest.raises(BackendUnavailable, match="does not load"):
        _ = XTTSBackend(broken, device="cpu").sample_rate
