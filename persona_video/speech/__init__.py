"""Stage 2: speech with a per-frame intent timing map.

``synthesize_with_intent`` speaks a ScriptIntent in a persona's voice:

- each run of words between pauses is one model call (prosody flows across
  it), with one phoneme group per segment so the model's own durations say
  where every segment is;
- pauses are silence of the segment's length, or one drawn from the persona's
  range (the punctuation silence the model already made counts towards it);
- emphasis is audible: slower (both voices take a per-phoneme pace: hibari
  reads one, Piper's graph is given one, see ``piper_graph``; 15 % slower at
  full intensity) and louder (+3 dB at full intensity, 20 ms ramps);
- the persona's speed (or the request's) applies to everything.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, InputError
from ..personas import Persona
from ..types import FPS, PhonemeTiming, ScriptIntent, Segment, SegmentSpan, Speech
from ..wav import read_wav, write_wav
from .timing import build_timing_map
from .voices import EMBEDDED_VOICES, get_voice

logger = logging.getLogger(__name__)

LEAD_IN_S = 0.2  # silence before the first word: the face settles, the mouth is closed
TAIL_S = 0.35  # silence after the last word
EMPHASIS_SLOWDOWN = 0.15  # fraction slower at intensity 1
EMPHASIS_GAIN_DB = 3.0  # louder at intensity 1
PEAK = 0.89  # -1 dBFS
SPEECH_BACKENDS = ("auto", "hibari", "piper", "xtts")
_PUNCTUATION = set(".,!?;:—–-…\"'()")

__all__ = [
    "SPEECH_BACKENDS",
    "validate_reference_upload",
    "resolve_voice",
    "synthesize_with_intent",
    "write_wav",
    "read_wav",
]


def _xtts_status():
    from ..weights.registry import heavy_backend_status

    return heavy_backend_status("xtts")


def resolve_voice(
    persona: Persona, voice: str | None = None, backend: str = "auto", reference_wav: str | Path | None = None
) -> tuple[str, str, str]:
    """(backend, voice, notice) that will speak, from the request and the persona.

    auto: XTTS voice cloning when its weights and runtime are here and there is
    a reference recording (the request's or the persona's); otherwise the
    embedded voice, with a notice when a reference was given but cannot be used.
    """
    if backend not in SPEECH_BACKENDS:
        raise InputError(f"unknown speech backend {backend!r}: choose one of {', '.join(SPEECH_BACKENDS)}")
    reference = reference_wav or (
        str(persona.resolve_path(persona.speech.reference_wav)) if persona.speech.reference_wav else None
    )
    if backend == "xtts":
        status = _xtts_status()
        if not status.available:
            raise BackendUnavailable(f"the xtts speech backend cannot run here: {status.reason}")
        if reference is None:
            raise InputError("xtts clones a voice: upload a reference recording of 3-30 s of speech")
        return "xtts", str(reference), ""
    notice = ""
    if backend == "auto" and reference is not None:
        status = _xtts_status()
        if status.available:
            return "xtts", str(reference), ""
        if reference_wav is not None:
            notice = f"voice cloning (XTTS) is not available here, so the default voice was used: {status.reason}"
    voice = voice or persona.speech.voice
    if voice not in EMBEDDED_VOICES:
        raise InputError(f"unknown voice {voice!r}: choose one of {', '.join(EMBEDDED_VOICES)}")
    needed = EMBEDDED_VOICES[voice]
    if backend not in ("auto", needed):
        raise InputError(f"voice {voice!r} is a {needed} voice, not {backend}: choose backend {needed} or auto")
    return needed, voice, notice


def _phrases(intent: ScriptIntent) -> list[tuple[list[int], list[int]]]:
    """[(indices of the pauses before the phrase, indices of its spoken segments)], plus a
    trailing entry with no spoken segments for pauses at the end."""
    out: list[tuple[list[int], list[int]]] = []
    pauses: list[int] = []
    words: list[int] = []
    for index, seg in enumerate(intent.segments):
        if seg.intent_type == "pause":
            if words:
                out.append((pauses, words))
                pauses, words = [], []
            pauses.append(index)
        else:
            words.append(index)
    out.append((pauses, words))
    return out


def _word_bounds(phonemes: list[tuple[str, int, int]], span: tuple[int, int]) -> tuple[int, int]:
    """The span without leading/trailing punctuation phonemes (where the words are)."""
    if span[1] <= span[0]:
        return span
    inside = [p for p in phonemes if span[0] <= p[1] < span[1] and p[0] not in _PUNCTUATION and p[0].strip()]
    if not inside:
        return span
    return inside[0][1], inside[-1][2]


def synthesize_with_intent(
    intent: ScriptIntent,
    persona: Persona,
    *,
    voice: str | None = None,
    backend: str = "auto",
    speed: float | None = None,
    seed: int = 0,
    fps: int = FPS,
    reference_wav: str | Path | None = None,
) -> Speech:
    """Speak the script; returns audio, the intent timing map and phoneme timings.

    speed None means the persona's speed (0.5..2). reference_wav: a voice to
    clone (3-30 s) when XTTS can run; otherwise the embedded voice is used and
    the result's notice says so.
    """
    backend_name, voice_name, notice = resolve_voice(persona, voice, backend, reference_wav)
    speed = persona.speech.speed if speed is None else float(speed)
    if not 0.5 <= speed <= 2.0:
        raise InputError(f"speed {speed} is out of range: use 0.5 to 2")
    if not any(s.intent_type != "pause" and s.text.strip() for s in intent.segments):
        raise InputError("the script has no words to speak: write at least one sentence")
    if backend_name == "xtts":
        from .xtts_voice import XTTSVoice

        tts = XTTSVoice(Path(voice_name))
    else:
        tts = get_voice(voice_name)
    rate = tts.sample_rate
    rng = np.random.default_rng(seed)
    low_s, high_s = persona.script.pause_range_s

    pieces: list[np.ndarray] = [np.zeros(int(LEAD_IN_S * rate), np.float32)]
    cursor = len(pieces[0])
    spans: dict[int, tuple[int, int]] = {}
    phoneme_timings: list[PhonemeTiming] = []
    trailing_silence = 0
    for pause_indices, word_indices in _phrases(intent):
        # pauses before this phrase: silence, less what punctuation already gave
        wanted = sum(
            intent.segments[i].pause_s if intent.segments[i].pause_s is not None else float(rng.uniform(low_s, high_s))
            for i in pause_indices
        )
        gap = max(0, int(wanted * rate) - trailing_silence) if pause_indices else 0
        if gap:
            pieces.append(np.zeros(gap, np.float32))
            cursor += gap
        if not word_indices:
            continue
        segments = [intent.segments[i] for i in word_indices]
        for chunk in _chunks(tts, segments, word_indices):
            chunk_segments = [intent.segments[i] for i in chunk]
            groups = [tts.phonemize(s.text) for s in chunk_segments]
            speeds = [
                speed * (1.0 - EMPHASIS_SLOWDOWN * s.intensity) if s.intent_type == "emphasis" else speed
                for s in chunk_segments
            ]
            phrase = tts.synthesize_groups(groups, speeds, seed=int(rng.integers(0, 2**31)))
            audio = _emphasise(phrase.audio, phrase.group_spans, chunk_segments, rate)
            for index, span in zip(chunk, phrase.group_spans, strict=True):
                start, end = _word_bounds(phrase.phonemes, span)
                spans[index] = (cursor + start, cursor + end)
            phoneme_timings.extend(
                PhonemeTiming(symbol, (cursor + s) / rate, (cursor + e) / rate) for symbol, s, e in phrase.phonemes
            )
            last_word_end = max(spans[i][1] for i in chunk) - cursor
            trailing_silence = max(0, len(audio) - last_word_end)
            pieces.append(audio)
            cursor += len(audio)
    pieces.append(np.zeros(int(TAIL_S * rate), np.float32))
    audio = np.concatenate(pieces)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0:
        audio = (audio * (PEAK / peak)).astype(np.float32)
    total_s = len(audio) / rate
    segment_spans = _segment_spans(intent, spans, rate, total_s)
    timing = build_timing_map(segment_spans, total_s, fps)
    return Speech(
        audio=audio,
        sample_rate=rate,
        timing=timing,
        phonemes=tuple(phoneme_timings),
        backend=backend_name,
        voice=tts.voice,
        notice=notice,
    )


def _chunks(tts, segments: list[Segment], indices: list[int]) -> list[list[int]]:
    """Split a phrase at segment boundaries so no model call exceeds its length limit."""
    out: list[list[int]] = [[]]
    size = 0
    for seg, index in zip(segments, indices, strict=True):
        length = len(seg.text) + 1
        if out[-1] and size + length > tts.max_ids * 0.8:
            out.append([])
            size = 0
        out[-1].append(index)
        size += length
    return out


def _emphasise(audio: np.ndarray, spans: list[tuple[int, int]], segments: list[Segment], rate: int) -> np.ndarray:
    """Raise the level of emphasised segments with short ramps."""
    gain = np.ones(len(audio), np.float32)
    ramp = max(1, int(0.02 * rate))
    for (start, end), seg in zip(spans, segments, strict=True):
        if seg.intent_type != "emphasis" or end <= start:
            continue
        boost = 10 ** (EMPHASIS_GAIN_DB * seg.intensity / 20.0)
        envelope = np.full(end - start, boost, np.float32)
        edge = min(ramp, (end - start) // 2)
        if edge > 0:
            envelope[:edge] = np.linspace(1.0, boost, edge)
            envelope[-edge:] = np.linspace(boost, 1.0, edge)
        gain[start:end] = np.maximum(gain[start:end], envelope)
    return audio * gain


def _segment_spans(
    intent: ScriptIntent, spans: dict[int, tuple[int, int]], rate: int, total_s: float
) -> list[SegmentSpan]:
    """Seconds for every segment; a run of pauses shares the gap between its neighbours' words."""
    segments = intent.segments
    bounds: dict[int, tuple[float, float]] = {i: (s / rate, e / rate) for i, (s, e) in spans.items()}
    index = 0
    while index < len(segments):
        if index in bounds:
            index += 1
            continue
        run_end = index
        while run_end < len(segments) and run_end not in bounds:
            run_end += 1
        start = bounds[index - 1][1] if index > 0 else 0.0
        end = bounds[run_end][0] if run_end < len(segments) else total_s
        step = (end - start) / (run_end - index)
        for k, i in enumerate(range(index, run_end)):
            bounds[i] = (start + k * step, start + (k + 1) * step)
        index = run_end
    return [
        SegmentSpan(i, seg.intent_type, seg.intensity, seg.text, bounds[i][0], bounds[i][1])
        for i, seg in enumerate(segments)
    ]


def validate_reference_upload(path: str | Path) -> None:
    """Check an uploaded reference voice (readable, 3-30 s, not silent); InputError with the fix."""
    from ..heavy.xtts import validate_reference_wav

    validate_reference_wav(Path(path))
