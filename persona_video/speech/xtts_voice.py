"""XTTS v2 voice cloning as a speech voice: one synthesis per segment (XTTS
has no phoneme alignments), so each segment's span is where its own audio
sits. The model loads once per process (persona_video.speech.xtts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .voices import PhraseAudio

GAP_S = 0.06  # between segments of one phrase: a breath, not a pause
SILENCE_DB = -40.0  # trim threshold relative to the segment's peak


def _trim(audio: np.ndarray) -> np.ndarray:
    """Cut leading and trailing silence (XTTS pads generously)."""
    if audio.size == 0:
        return audio
    level = np.abs(audio)
    threshold = float(level.max()) * 10 ** (SILENCE_DB / 20.0)
    loud = np.flatnonzero(level > threshold)
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio[:0]


class XTTSVoice:
    name = "xtts"
    max_ids = 10**6  # no phoneme-id limit: every segment is its own call

    def __init__(self, reference_wav: Path, checkpoint_dir: Path | None = None, device: str = "auto") -> None:
        from ..weights.registry import backend_dir
        from .xtts import XTTSBackend

        self.voice = f"xtts:{Path(reference_wav).name}"
        self.reference_wav = Path(reference_wav)
        self._backend = XTTSBackend(checkpoint_dir or backend_dir("xtts"), device=device)
        self.sample_rate = self._backend.sample_rate

    def phonemize(self, text: str) -> str:
        return text

    def synthesize_groups(self, groups: list[str], speeds: list[float], seed: int = 0) -> PhraseAudio:
        del seed
        gap = np.zeros(int(GAP_S * self.sample_rate), np.float32)
        pieces: list[np.ndarray] = []
        spans: list[tuple[int, int]] = []
        cursor = 0
        for text, speed in zip(groups, speeds, strict=True):
            spoken = any(ch.isalnum() for ch in text)
            audio = _trim(self._backend.synthesize(text, speed, self.reference_wav)) if spoken else gap[:0]
            if pieces and audio.size:
                pieces.append(gap)
                cursor += gap.size
            spans.append((cursor, cursor + audio.size))
            pieces.append(audio.astype(np.float32))
            cursor += audio.size
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return PhraseAudio(audio, spans, [])
