"""XTTS v2 voice cloning through ``coqui-tts`` (import name ``TTS``).

The model loads once per process per checkpoint folder, behind a lock, the
first time a backend needs it. The reference voice is read with soundfile and
resampled here (torchaudio's loader would need FFmpeg's shared libraries), so
its latents are computed from an array, not a path.

Checkpoint layout (see ``checkpoints/README.md``)::

    xtts_v2/model.pth  config.json  vocab.json  speakers_xtts.pth
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from scipy.signal import resample_poly

from persona_video.errors import BackendUnavailable, InputError, StageError
from persona_video.weights.registry import WEIGHTS
from persona_video.weights.runtime import missing_packages, resolve_device

logger = logging.getLogger(__name__)

#: Shortest and longest reference recording accepted, seconds.
REFERENCE_MIN_S = 3.0
REFERENCE_MAX_S = 30.0
#: Reference RMS below this (about -60 dBFS) counts as silence.
REFERENCE_SILENCE_RMS = 1e-3
#: Sample rate XTTS computes its conditioning latents at, Hz.
XTTS_REFERENCE_RATE = 22050

XTTS_FILES = tuple(Path(w.relative_path).name for w in WEIGHTS.values() if w.backend == "xtts")


def validate_reference_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read and check a reference voice recording.

    Returns (audio float32 mono (num_samples,) in [-1, 1], 22050): resampled to
    the rate XTTS conditions on. Raises InputError, with the fix, when the file
    is not readable audio, is shorter than 3 s or longer than 30 s, or is silent.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"reference voice {path} does not exist: upload a WAV or FLAC recording of 3-30 s of speech")
    try:
        audio, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as e:
        raise InputError(
            f"reference voice {path.name} is not readable audio ({e}): "
            "upload a WAV or FLAC recording of 3-30 s of speech"
        ) from e
    mono = audio.mean(axis=1)
    duration_s = len(mono) / sample_rate if sample_rate else 0.0
    if duration_s < REFERENCE_MIN_S:
        raise InputError(
            f"reference voice {path.name} is {duration_s:.1f} s long: XTTS needs at least {REFERENCE_MIN_S:.0f} s "
            "of clear speech, upload a longer recording"
        )
    if duration_s > REFERENCE_MAX_S:
        raise InputError(
            f"reference voice {path.name} is {duration_s:.1f} s long: at most {REFERENCE_MAX_S:.0f} s is used, "
            "trim it to the clearest 3-30 s"
        )
    rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
    if not np.isfinite(rms) or rms < REFERENCE_SILENCE_RMS:
        raise InputError(
            f"reference voice {path.name} is silent (RMS {rms:.1e}): upload a recording of someone speaking"
        )
    if sample_rate != XTTS_REFERENCE_RATE:
        divisor = np.gcd(int(sample_rate), XTTS_REFERENCE_RATE)
        mono = resample_poly(mono, XTTS_REFERENCE_RATE // divisor, int(sample_rate) // divisor).astype(np.float32)
    return np.clip(mono, -1.0, 1.0).astype(np.float32), XTTS_REFERENCE_RATE


@dataclass
class _LoadedXTTS:
    model: Any  # TTS.tts.models.xtts.Xtts
    device: str
    sample_rate: int
    languages: tuple[str, ...]


_MODELS: dict[tuple[Path, str], _LoadedXTTS] = {}
_MODELS_LOCK = threading.Lock()


def _load(checkpoint_dir: Path, device: str) -> _LoadedXTTS:
    """Load (once per process) the XTTS model in ``checkpoint_dir`` on ``device``."""
    key = (checkpoint_dir.resolve(), device)
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        import torch
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        logger.info("loading XTTS v2 from %s on %s", checkpoint_dir, device)
        try:
            config = XttsConfig()
            config.load_json(str(checkpoint_dir / "config.json"))
            model = Xtts(config)
            model.load_checkpoint(config, checkpoint_dir=str(checkpoint_dir), eval=True, use_deepspeed=False)
        except (RuntimeError, KeyError, ValueError, OSError, EOFError) as e:
            raise BackendUnavailable(
                f"XTTS checkpoint in {checkpoint_dir} does not load ({type(e).__name__}: {e}): "
                "replace model.pth, config.json, vocab.json and speakers_xtts.pth with the XTTS v2 release files"
            ) from e
        model.to(torch.device(device))
        loaded = _LoadedXTTS(model, device, int(config.model_args.output_sample_rate), tuple(config.languages))
        _MODELS[key] = loaded
        return loaded


class XTTSBackend:
    """Text to speech in a cloned voice.

    checkpoint_dir: folder with model.pth, config.json, vocab.json, speakers_xtts.pth.
    device: "auto" (CUDA when present, else CPU), "cuda" or "cpu".
    language: XTTS language code ("en", "de", ...), checked against the model's config.
    """

    name = "xtts"

    def __init__(self, checkpoint_dir: Path, device: str = "auto", language: str = "en") -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        missing = [str(self.checkpoint_dir / f) for f in XTTS_FILES if not (self.checkpoint_dir / f).is_file()]
        if missing:
            raise BackendUnavailable(
                f"XTTS v2 weights missing: {', '.join(missing)}. Run `COQUI_TOS_AGREED=1 python -m persona_video "
                "fetch xtts` (agreeing to the Coqui Public Model License) or set PERSONA_VIDEO_CHECKPOINTS"
            )
        packages = missing_packages(("torch", "TTS", "six"))
        if packages:
            raise BackendUnavailable(
                f"XTTS needs the Python package(s) {', '.join(packages)}: pip install -r requirements-gpu.txt"
            )
        self.device = resolve_device(device)
        self.language = language
        self._latents: dict[tuple[Path, float], tuple[Any, Any]] = {}

    @property
    def _loaded(self) -> _LoadedXTTS:
        loaded = _load(self.checkpoint_dir, self.device)
        if self.language not in loaded.languages:
            raise InputError(
                f"XTTS does not speak language {self.language!r}: pick one of {', '.join(loaded.languages)}"
            )
        return loaded

    @property
    def sample_rate(self) -> int:
        """Output sample rate, Hz (24000 for XTTS v2)."""
        return self._loaded.sample_rate

    def _conditioning(self, reference_wav: Path) -> tuple[Any, Any]:
        """GPT conditioning latents and speaker embedding for a reference, cached by path and mtime."""
        reference_wav = Path(reference_wav).resolve()
        key = (reference_wav, reference_wav.stat().st_mtime if reference_wav.exists() else 0.0)
        if key not in self._latents:
            import torch

            audio, rate = validate_reference_wav(reference_wav)
            loaded = self._loaded
            config = loaded.model.config
            audio_tensor = torch.from_numpy(audio)[None, :].to(loaded.device)
            gpt_latent = loaded.model.get_gpt_cond_latents(
                audio_tensor, rate, length=config.gpt_cond_len, chunk_length=config.gpt_cond_chunk_len
            )
            speaker_embedding = loaded.model.get_speaker_embedding(audio_tensor, rate)
            self._latents[key] = (gpt_latent, speaker_embedding)
        return self._latents[key]

    def synthesize(self, text: str, speed: float, reference_wav: Path) -> np.ndarray:
        """Speak ``text`` in the voice of ``reference_wav``.

        speed: speaking-rate factor (1.0 normal, XTTS accepts about 0.5-2.0).
        Returns float32 mono samples (num_samples,) in [-1, 1] at ``sample_rate``.
        """
        if not text.strip():
            return np.zeros(0, dtype=np.float32)
        if not 0.5 <= speed <= 2.0:
            raise InputError(f"speech speed {speed} is outside 0.5-2.0: pick a speed in that range")
        gpt_latent, speaker_embedding = self._conditioning(reference_wav)
        loaded = self._loaded
        config = loaded.model.config
        try:
            result = loaded.model.inference(
                text,
                self.language,
                gpt_latent,
                speaker_embedding,
                temperature=config.temperature,
                length_penalty=config.length_penalty,
                repetition_penalty=config.repetition_penalty,
                top_k=config.top_k,
                top_p=config.top_p,
                speed=speed,
            )
        except (RuntimeError, ValueError, AssertionError) as e:
            raise StageError("speech", f"XTTS failed on {text[:40]!r}: {e}") from e
        wav = result["wav"]
        wav = wav.detach().cpu().numpy() if hasattr(wav, "detach") else np.asarray(wav)
        return np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
