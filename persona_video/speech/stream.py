"""Speech sentence by sentence: ``SpeechStream`` speaks each sentence as soon as
it is written and hands back its audio, spans and phonemes as one chunk, so the
first sentence can play while later ones are still being written.

Within a sentence:

- each run of words between pauses is one model call (prosody flows across
  it), with one phoneme group per segment so the model's own durations say
  where every segment is;
- pauses are silence of the segment's length, or one drawn from the persona's
  range (the punctuation silence the model already made counts towards it);
  the pauses after a sentence's end belong to that sentence (``split_sentences``),
  so a pause between two sentences sits where the markup puts it;
- emphasis is audible: slower (both voices take a per-phoneme pace: hibari
  reads one, Piper's graph is given one, see ``piper_graph``; 15 % slower at
  full intensity) and louder (+3 dB at full intensity, 20 ms ramps);
- the persona's speed (or the request's) applies to everything.

Across sentences:

- one random generator, drawn in sentence order (pause lengths, per-call model
  seeds), so speaking a script sentence by sentence or all at once gives the
  same samples;
- chunks abut sample-exactly, and every join is silence meeting silence: a
  sentence ends in its punctuation's silence or its pause (and its last sample
  is faded to zero if the voice's is not), and every sentence but the first
  begins with JOIN_S of silence, so no word's onset sits on a join: no gap,
  no click;
- the level (see ``SpeechStream``) is fixed by the first sentence, because a
  stream cannot normalise over audio it has not made yet.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..personas import Persona
from ..types import FPS, PhonemeTiming, ScriptIntent, Segment, SegmentSpan, Speech, SpeechChunk
from .choice import resolve_voice
from .timing import build_timing_map
from .voices import PhraseAudio, get_voice

LEAD_IN_S = 0.2  # silence before the first word: the face settles, the mouth is closed
TAIL_S = 0.35  # silence after the last word, at least (see closing_silence)
#: Samples in one frame of AAC, the encoder the streams carry: its first frame is the encoder's
#: priming, and its last is padded out to the whole frame.
AAC_FRAME_SAMPLES = 1024
#: How far the encoded audio may run past the last video frame. An MPEG-TS stream carries the
#: priming frame and the last frame's padding too (an MP4's edit list hides them), 43-85 ms
#: in all at 24 kHz, and a player-side check of the joined segments allows 80 ms.
MAX_AUDIO_OVERHANG_S = 0.06
EMPHASIS_SLOWDOWN = 0.15  # fraction slower at intensity 1
EMPHASIS_GAIN_DB = 3.0  # louder at intensity 1
PEAK = 0.89  # -1 dBFS: the loudest sample of the first sentence, and the most any sentence reaches
JOIN_S = 0.01  # silence before every sentence but the first: a join falls in silence, not on a word's onset
EDGE_FADE_S = 0.005  # fade at a chunk's end when the voice's own last sample is not quiet
EDGE_QUIET = 1e-3  # a sample this small (-60 dBFS) is silence enough to join on
_PUNCTUATION = set(".,!?;:—–-…\"'()")


def closing_silence(samples: int, rate: int, fps: int = FPS) -> int:
    """Samples of silence to close a track of ``samples``: at least TAIL_S, so that the track
    ends on a whole video frame (every sample of it is seen), and a few frames more (at most a
    second) where its AAC would otherwise run more than MAX_AUDIO_OVERHANG_S past the video."""
    per_frame = rate / fps
    frames = math.ceil((samples + TAIL_S * rate) / per_frame - 1e-6)
    totals = [round((frames + extra) * per_frame) for extra in range(fps)]

    def overhang(total: int) -> int:
        return AAC_FRAME_SAMPLES + (-total) % AAC_FRAME_SAMPLES

    fitting = [total for total in totals if overhang(total) <= MAX_AUDIO_OVERHANG_S * rate]
    # none fits at a rate where the priming alone is more: then the least overhang
    return (fitting[0] if fitting else min(totals, key=overhang)) - samples


class SpeechStream:
    """Speak a script one sentence at a time.

    persona: pause range and speed (and the voice, unless ``voice`` names one).
    voice, backend, speed, reference_wav: as ``synthesize_with_intent``; speed
        None means the persona's (0.5..2).
    seed: the random generator's seed (pause lengths, the voices' noise).
    fps: video frames per second of the timing maps.

    Level: the first sentence that speaks words is brought to PEAK, and the
    gain that took it there is used for every later sentence, so the voice
    keeps one level through the track; a later sentence that this gain would
    lift past PEAK is instead brought to PEAK on its own (its own, smaller,
    gain), so nothing clips. No rule that waits for later audio could stream.

    Attributes: ``sample_rate`` (Hz), ``backend`` ("hibari", "piper", "xtts"),
    ``voice`` (the voice's name), ``notice`` (a sentence for the user when a
    fallback happened, else ""), ``samples`` (samples of audio so far),
    ``gain`` (the level gain the first sentence set; None before it).
    """

    def __init__(
        self,
        persona: Persona,
        *,
        voice: str | None = None,
        backend: str = "auto",
        speed: float | None = None,
        seed: int = 0,
        fps: int = FPS,
        reference_wav: str | Path | None = None,
    ) -> None:
        backend_name, voice_name, notice = resolve_voice(persona, voice, backend, reference_wav)
        speed = persona.speech.speed if speed is None else float(speed)
        if not 0.5 <= speed <= 2.0:
            raise InputError(f"speed {speed} is out of range: use 0.5 to 2")
        if backend_name == "xtts":
            from .xtts_voice import XTTSVoice

            self._tts = XTTSVoice(Path(voice_name))
        else:
            self._tts = get_voice(voice_name)
        self.sample_rate: int = int(self._tts.sample_rate)
        self.backend: str = backend_name
        self.voice: str = self._tts.voice
        self.notice: str = notice
        self.samples: int = 0
        self.fps = fps
        self._speed = speed
        self._pause_range_s = persona.script.pause_range_s
        self._rng = np.random.default_rng(seed)
        self._audio: list[np.ndarray] = []
        self._spans: list[SegmentSpan] = []
        self._phonemes: list[PhonemeTiming] = []
        self.gain: float | None = None  # set by the first sentence that speaks words
        self._finished = False

    def add(self, sentence: ScriptIntent) -> SpeechChunk:
        """Speak one sentence and append it; its chunk (audio at the final level,
        spans and phonemes in seconds from the track's start). The first chunk
        begins with LEAD_IN_S of silence, every later one with JOIN_S."""
        self._check_open()
        rate = self.sample_rate
        start_sample = self.samples
        lead = np.zeros(int((JOIN_S if self._audio else LEAD_IN_S) * rate), np.float32)
        pieces: list[np.ndarray] = [lead]
        cursor = start_sample + len(lead)
        word_bounds: dict[int, tuple[int, int]] = {}  # segment index in the sentence -> samples in the track
        phonemes: list[PhonemeTiming] = []
        low_s, high_s = self._pause_range_s
        trailing_silence = 0  # samples after the last word of the phrase before (its punctuation)
        for pause_indices, word_indices in _phrases(sentence):
            wanted_s = sum(
                sentence.segments[i].pause_s
                if sentence.segments[i].pause_s is not None
                else float(self._rng.uniform(low_s, high_s))
                for i in pause_indices
            )
            gap = max(0, int(wanted_s * rate) - trailing_silence) if pause_indices else 0
            if gap:
                pieces.append(np.zeros(gap, np.float32))
                cursor += gap
            if not word_indices:
                continue
            segments = [sentence.segments[i] for i in word_indices]
            for call in _calls(self._tts, segments, word_indices):
                phrase, audio = self._speak([sentence.segments[i] for i in call])
                for index, span in zip(call, phrase.group_spans, strict=True):
                    start, end = _word_bounds(phrase.phonemes, span)
                    word_bounds[index] = (cursor + start, cursor + end)
                phonemes.extend(
                    PhonemeTiming(symbol, (cursor + s) / rate, (cursor + e) / rate) for symbol, s, e in phrase.phonemes
                )
                last_word_end = max(word_bounds[i][1] for i in call) - cursor
                trailing_silence = max(0, len(audio) - last_word_end)
                pieces.append(audio)
                cursor += len(audio)
        speaks = any(s.intent_type != "pause" and any(ch.isalnum() for ch in s.text) for s in sentence.segments)
        audio = _quiet_end(self._level(np.concatenate(pieces), speaks), rate)
        spans = _segment_spans(sentence, word_bounds, rate, start_sample, start_sample + len(audio), len(self._spans))
        return self._append(SpeechChunk(audio, start_sample, tuple(spans), tuple(phonemes)))

    def _speak(self, segments: list[Segment]) -> tuple[PhraseAudio, np.ndarray]:
        """One model call: the phrase (spans, phonemes in samples) and its audio, emphasis applied."""
        groups = [self._tts.phonemize(s.text) for s in segments]
        speeds = [
            self._speed * (1.0 - EMPHASIS_SLOWDOWN * s.intensity) if s.intent_type == "emphasis" else self._speed
            for s in segments
        ]
        phrase = self._tts.synthesize_groups(groups, speeds, seed=int(self._rng.integers(0, 2**31)))
        return phrase, _emphasise(phrase.audio, phrase.group_spans, segments, self.sample_rate)

    def finish(self) -> SpeechChunk:
        """Append the closing silence (``closing_silence``) and close the stream; its chunk."""
        self._check_open()
        if self.gain is None:
            raise InputError("the script has no words to speak: write at least one sentence")
        tail = closing_silence(self.samples, self.sample_rate, self.fps)
        chunk = self._append(SpeechChunk(np.zeros(tail, np.float32), self.samples, (), ()))
        self._finished = True
        return chunk

    def speech(self) -> Speech:
        """Everything so far as one Speech: audio (samples,) float32, the timing map of
        all spans so far over samples / sample_rate seconds, the phonemes so far."""
        if len(self._audio) > 1:
            self._audio = [np.concatenate(self._audio)]  # one copy now, not one per call
        audio = self._audio[0] if self._audio else np.zeros(0, np.float32)
        timing = build_timing_map(list(self._spans), self.samples / self.sample_rate, self.fps)
        return Speech(
            audio=audio.copy(),
            sample_rate=self.sample_rate,
            timing=timing,
            phonemes=tuple(self._phonemes),
            backend=self.backend,
            voice=self.voice,
            notice=self.notice,
        )

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("this SpeechStream is finished: start a new one to speak another script")

    def _append(self, chunk: SpeechChunk) -> SpeechChunk:
        self._audio.append(chunk.audio)
        self._spans.extend(chunk.spans)
        self._phonemes.extend(chunk.phonemes)
        self.samples = chunk.end_sample
        return chunk

    def _level(self, audio: np.ndarray, speaks: bool) -> np.ndarray:
        """The sentence at the stream's level (see the class docstring)."""
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak == 0.0:
            return audio.astype(np.float32)
        if self.gain is None and speaks:
            self.gain = PEAK / peak
        # before any words (a sentence of punctuation only) the model's own level, at most PEAK
        gain = min(self.gain if self.gain is not None else 1.0, PEAK / peak)
        return (audio * gain).astype(np.float32)


def _quiet_end(audio: np.ndarray, rate: int) -> np.ndarray:
    """The chunk, faded out over its last EDGE_FADE_S unless it already ends on silence
    (the embedded voices fade their phrases themselves; XTTS trims at -40 dB)."""
    fade = min(int(EDGE_FADE_S * rate), len(audio))
    if fade and abs(float(audio[-1])) > EDGE_QUIET:
        audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return audio


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


def _calls(tts, segments: list[Segment], indices: list[int]) -> list[list[int]]:
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
    sentence: ScriptIntent,
    word_bounds: dict[int, tuple[int, int]],
    rate: int,
    start_sample: int,
    end_sample: int,
    first_index: int,
) -> list[SegmentSpan]:
    """Seconds from the track's start for every segment of a sentence whose chunk is
    [start_sample, end_sample); a run of pauses shares the gap between its neighbours'
    words, or the chunk's edge where it has no neighbour in the sentence (a pause
    after the sentence's end lasts to the chunk's end, where the next sentence begins).
    Span indices start at first_index (the segments of the sentences before)."""
    segments = sentence.segments
    bounds: dict[int, tuple[float, float]] = {i: (s / rate, e / rate) for i, (s, e) in word_bounds.items()}
    index = 0
    while index < len(segments):
        if index in bounds:
            index += 1
            continue
        run_end = index
        while run_end < len(segments) and run_end not in bounds:
            run_end += 1
        start = bounds[index - 1][1] if index > 0 else start_sample / rate
        end = bounds[run_end][0] if run_end < len(segments) else end_sample / rate
        step = (end - start) / (run_end - index)
        for k, i in enumerate(range(index, run_end)):
            bounds[i] = (start + k * step, start + (k + 1) * step)
        index = run_end
    return [
        SegmentSpan(first_index + i, seg.intent_type, seg.intensity, seg.text, bounds[i][0], bounds[i][1])
        for i, seg in enumerate(segments)
    ]
