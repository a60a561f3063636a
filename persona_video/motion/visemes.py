"""Mouth shapes for the embedded motion generator: phonemes -> visemes -> per-frame mouth curves.

Two phoneme alphabets reach this module:

- Piper (``Speech.backend == "piper"``): espeak-ng IPA, one symbol per item
  (``'h' 'ə' 'l' 'ˈ' 'o' 'ʊ'``), plus stress marks, the length mark ``ː``,
  spaces, punctuation and the sentence pads ``^`` / ``$``.
- hibari (``"hibari"``): the misaki/Kokoro alphabet, IPA-like with capital
  letters for diphthongs (A = eɪ, I = aɪ, O = oʊ, W = aʊ, Y = ɔɪ), ``ᵊ``,
  ``ɾ``, ``ʧ``/``ʤ``, stress marks, spaces and punctuation.

Every symbol maps to a target for the six mouth controls of the compact-70
layout (see :mod:`persona_video.types`): jaw_open, lip_wide, lip_round,
lip_press, lip_funnel, teeth_show. Stress marks lend their time to the vowel
they precede, length marks extend the symbol before them, punctuation and
pads are the closed rest mouth. Targets are laid on a 200 Hz grid, blended
with a short window (coarticulation), pooled to video frames and scaled by
the loudness envelope, so the mouth closes in silence and opens with the voice.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import scipy.fft

from ..types import PhonemeTiming

logger = logging.getLogger(__name__)

#: Mouth controls this module writes, in the column order of its arrays.
MOUTH_NAMES: tuple[str, ...] = ("jaw_open", "lip_wide", "lip_round", "lip_press", "lip_funnel", "teeth_show")
JAW, WIDE, ROUND, PRESS, FUNNEL, TEETH = range(6)

#: Fine time grid the visemes are blended on, samples per second.
GRID_HZ = 200
#: Where each backend's alignment sits relative to the sound, seconds; the
#: visemes are moved earlier by this much. Measured: Piper's vowels land ~40 ms
#: late; hibari's duration-predictor timings correlate best with the sound at 40 ms too.
ALIGNMENT_LAG_S: dict[str, float] = {"piper": 0.040, "hibari": 0.040}

# Viseme targets: (jaw_open, lip_wide, lip_round, lip_press, lip_funnel, teeth_show).
_REST = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
_VISEMES: dict[str, tuple[float, ...]] = {
    "rest": _REST,
    "bilabial": (0.0, 0.0, 0.0, 1.0, 0.0, 0.0),  # p b m: lips pressed shut
    "labiodental": (0.08, 0.1, 0.0, 0.0, 0.0, 0.85),  # f v: lower lip tucked under the teeth
    "postalveolar": (0.15, 0.0, 0.35, 0.0, 0.9, 0.2),  # sh ch zh j: small round funnel
    "dental": (0.18, 0.2, 0.0, 0.0, 0.0, 0.35),  # th
    "sibilant": (0.1, 0.35, 0.0, 0.0, 0.0, 0.3),  # s z: teeth nearly together
    "alveolar": (0.22, 0.2, 0.0, 0.0, 0.0, 0.1),  # t d n l flap
    "velar": (0.3, 0.1, 0.0, 0.0, 0.0, 0.0),  # k g ng h glottal
    "rhotic": (0.18, 0.0, 0.45, 0.0, 0.2, 0.0),  # r
    "w": (0.1, 0.0, 0.9, 0.0, 0.1, 0.0),
    "y": (0.12, 0.5, 0.0, 0.0, 0.0, 0.0),
    "open": (0.95, 0.2, 0.0, 0.0, 0.0, 0.0),  # a ɑ ɒ
    "ae": (0.8, 0.45, 0.0, 0.0, 0.0, 0.0),  # æ
    "mid": (0.5, 0.15, 0.0, 0.0, 0.0, 0.0),  # ʌ ə ɜ
    "schwa": (0.38, 0.1, 0.0, 0.0, 0.0, 0.0),  # reduced ə ᵊ ɐ ᵻ
    "front_mid": (0.55, 0.55, 0.0, 0.0, 0.0, 0.0),  # e ɛ
    "front_close": (0.28, 0.8, 0.0, 0.0, 0.0, 0.0),  # i ɪ
    "back_mid": (0.6, 0.0, 0.7, 0.0, 0.0, 0.0),  # o ɔ
    "back_close": (0.25, 0.0, 0.9, 0.0, 0.15, 0.0),  # u ʊ
    "rhotic_vowel": (0.4, 0.0, 0.4, 0.0, 0.15, 0.0),  # ɚ ɝ
}
_SYMBOL_CLASS: dict[str, str] = {}
for _cls, _symbols in {
    "bilabial": "pbmɱ",
    "labiodental": "fv",
    "postalveolar": "ʃʒʧʤ",
    "dental": "θð",
    "sibilant": "sz",
    "alveolar": "tdnlɾɫɬT",  # misaki writes the flap as T
    "velar": "kgɡŋhxʔç",
    "rhotic": "ɹrɻ",
    "w": "wʍ",
    "y": "j",
    "open": "aɑɒä",
    "ae": "æ",
    "mid": "ʌɜ",
    "schwa": "əᵊɐᵻɘ",
    "front_mid": "eɛ",
    "front_close": "iɪy",
    "back_mid": "oɔ",
    "back_close": "uʊɯ",
    "rhotic_vowel": "ɚɝ",
}.items():
    for _symbol in _symbols:
        _SYMBOL_CLASS[_symbol] = _cls
# misaki capitals are diphthongs: two classes, the first held a little longer.
_DIPHTHONGS: dict[str, tuple[str, str]] = {
    "A": ("front_mid", "front_close"),
    "I": ("open", "front_close"),
    "O": ("back_mid", "back_close"),
    "W": ("open", "back_close"),
    "Y": ("back_mid", "front_close"),
}
_DIGRAPHS: dict[str, str] = {"tʃ": "ʧ", "dʒ": "ʤ", "ɜː": "ɜ", "eɪ": "A", "aɪ": "I", "oʊ": "O", "aʊ": "W", "ɔɪ": "Y"}
#: Symbols that lend their time to the next sound (stress) or the previous one (length, palatal glide).
_LEADS_NEXT = set("ˈˌ'")
_EXTENDS_PREVIOUS = set("ːˑʲʰ̩̃")
_REST_SYMBOLS = set('^$_.,;:!?…—–-"()[]«»“”')
#: Coarticulation windows (Hann, seconds): the jaw moves slower than the lips; closures are short.
JAW_BLEND_S = 0.16
LIP_BLEND_S = 0.09
PRESS_BLEND_S = 0.05
#: Share of a viseme's jaw opening kept at the quietest voiced sound (the loudness sets the rest).
JAW_LOUDNESS_FLOOR = 0.35
#: Share of the jaw opening that follows the voice alone (syllable energy) rather than the viseme.
JAW_VOICE_SHARE = 0.15
#: Loudness level (0..1) below which the voice counts as silent and the lips close.
SILENCE_LEVEL = 0.15
#: How far the lips close in silence (lip_press), and the ease in and out of it, seconds.
REST_LIP_PRESS = 1.0
SILENCE_EASE_S = 0.08
#: A space (word gap) longer than this is a real closure, seconds.
_WORD_GAP_REST_S = 0.12
#: The loudness that counts as full voice (level 1), dBFS of the 100 ms frame RMS. A fixed
#: number, not the track's own 98th percentile, so the level of a frame never depends on
#: audio still to come (streaming computes motion on the speech so far). The streaming
#: speech stage brings the first sentence's peak to -1 dBFS (before it, the whole track's).
#: Measured on 12 tracks (3 scripts x mkbhd/ijustine x heart/joe), the 98th-percentile frame
#: loudness averaged -14.5 dBFS (heart -14.3, joe -14.7, spread -17.1..-13.1) with the whole
#: track's peak at -1 dBFS and -12.7 (heart -13.4, joe -12.1) with the first sentence's; -13
#: is the latter rounded toward heart, the voice of both personas. The 40 ms window reads
#: about 0.6 dB louder: the same reference serves.
LOUDNESS_REFERENCE_DBFS = -13.0
#: Frame loudness never reads below this, dBFS (60 dB under the full voice).
LOUDNESS_FLOOR_DBFS = LOUDNESS_REFERENCE_DBFS - 60.0


@dataclass(frozen=True)
class _Piece:
    """One viseme interval; target is None while it still borrows from a neighbour."""

    start_s: float
    end_s: float
    target: tuple[float, ...] | None
    borrow: int  # +1: take the next piece's target, -1: the previous one's, 0: own


@functools.lru_cache(maxsize=512)
def _symbol_classes(symbols: str) -> tuple[str, ...]:
    """Viseme classes of one phoneme item, in order (a diphthong gives two)."""
    for digraph, single in _DIGRAPHS.items():
        symbols = symbols.replace(digraph, single)
    classes: list[str] = []
    for symbol in symbols:
        if symbol in _DIPHTHONGS:
            classes.extend(_DIPHTHONGS[symbol])
        elif symbol in _SYMBOL_CLASS:
            classes.append(_SYMBOL_CLASS[symbol])
    return tuple(classes)


def _symbol_pieces(symbols: str, start_s: float, end_s: float) -> list[_Piece]:
    """Split one PhonemeTiming into viseme pieces (a diphthong becomes two, the first a little longer)."""
    classes = _symbol_classes(symbols)
    if len(classes) == 1:
        return [_Piece(start_s, end_s, _VISEMES[classes[0]], 0)]
    if not classes:
        if symbols and all(s in _LEADS_NEXT for s in symbols):
            return [_Piece(start_s, end_s, None, +1)]
        if symbols and all(s in _EXTENDS_PREVIOUS for s in symbols):
            return [_Piece(start_s, end_s, None, -1)]
        if symbols.strip() == "" and symbols and end_s - start_s < _WORD_GAP_REST_S:
            # a short word gap: half keeps the last sound, half anticipates the next
            mid_s = 0.5 * (start_s + end_s)
            return [_Piece(start_s, mid_s, None, -1), _Piece(mid_s, end_s, None, +1)]
        if symbols and not set(symbols) <= _REST_SYMBOLS | {" "}:
            logger.debug("no viseme for phoneme %r; using the rest mouth", symbols)
        return [_Piece(start_s, end_s, _REST, 0)]
    weights = [1.2] + [1.0] * (len(classes) - 1)
    unit_s = (end_s - start_s) / sum(weights)
    pieces, at_s = [], start_s
    for weight, cls in zip(weights, classes, strict=True):
        pieces.append(_Piece(at_s, at_s + weight * unit_s, _VISEMES[cls], 0))
        at_s += weight * unit_s
    return pieces


def viseme_intervals(phonemes: tuple[PhonemeTiming, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Phoneme timings -> (starts_s (N,), targets (N, 6)) with every borrowed target resolved.

    Gaps between phonemes and the time after the last one are the rest mouth.
    """
    pieces: list[_Piece] = []
    for item in phonemes:
        # a short gap (an aligner's pad between symbols) continues the sound before it; a long one is silence
        if pieces and item.start_s > pieces[-1].end_s + _WORD_GAP_REST_S:
            pieces.append(_Piece(pieces[-1].end_s, item.start_s, _REST, 0))
        pieces.extend(_symbol_pieces(item.phoneme, item.start_s, item.end_s))
    targets: list[tuple[float, ...] | None] = [p.target for p in pieces]
    for i, piece in enumerate(pieces):  # length marks and word-gap halves keep the sound before them
        if piece.borrow == -1:
            targets[i] = targets[i - 1] if i > 0 and targets[i - 1] is not None else _REST
    for i in range(len(pieces) - 1, -1, -1):  # stress marks lend their time to the sound after them
        if pieces[i].borrow == +1:
            targets[i] = targets[i + 1] if i + 1 < len(pieces) and targets[i + 1] is not None else _REST
    starts_s = np.array([p.start_s for p in pieces], dtype=np.float64)
    ends_s = np.array([p.end_s for p in pieces], dtype=np.float64)
    if len(pieces):  # a final rest piece after the last phoneme
        starts_s = np.append(starts_s, ends_s.max())
        targets.append(_REST)
    return starts_s, np.array(targets, dtype=np.float64).reshape(-1, len(MOUTH_NAMES))


def _hann_smooth(curves: np.ndarray, width_s: float) -> np.ndarray:
    """Smooth each column of (N, C) fine-grid curves with a normalised Hann window of width_s."""
    taps = max(3, int(round(width_s * GRID_HZ)) | 1)
    window = np.hanning(taps + 2)[1:-1]
    window /= window.sum()
    pad = taps // 2
    return convolve_valid(np.pad(curves, ((pad, pad), (0, 0)), mode="edge"), window)


def convolve_valid(padded: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'valid' convolution along the first axis of (N + K - 1, ...) with a (K,) kernel -> (N, ...).

    Written as a sum of shifted copies, so every output adds the same products in the same
    order whatever the array's length: the motion of a prefix of the speech agrees bit for
    bit with the whole track's where both see the same inputs (np.convolve hands each sum to
    a dot product whose rounding is the linear-algebra library's business).
    """
    count = padded.shape[0] - kernel.shape[0] + 1
    out = np.zeros((max(count, 0),) + padded.shape[1:], dtype=np.float64)
    for tap, weight in enumerate(kernel[::-1]):
        out += weight * padded[tap : tap + count]
    return out


def frame_loudness_db(
    audio: np.ndarray, sample_rate: int, fps: int, num_frames: int, window_s: float = 0.1
) -> np.ndarray:
    """Loudness per video frame in dBFS: RMS over window_s centred on each frame, floored at
    LOUDNESS_FLOOR_DBFS.

    The energy is summed in 5 ms blocks first (window edges land on the block grid), which keeps this
    to one pass over the samples. A frame reads only the audio within window_s / 2 + 5 ms of its
    centre. audio: float32 (num_samples,). Returns float64 (num_frames,).
    """
    samples = np.asarray(audio, dtype=np.float32).astype(np.float64)
    if num_frames == 0 or samples.size == 0:
        return np.full(num_frames, LOUDNESS_FLOOR_DBFS)
    block_edges = np.unique(np.round(np.arange(0, samples.size / sample_rate * GRID_HZ) * sample_rate / GRID_HZ))
    block_edges = block_edges[block_edges < samples.size]
    block_energy = np.add.reduceat(samples * samples, block_edges.astype(np.int64))
    cumulative = np.concatenate([[0.0], np.cumsum(block_energy)])
    sample_at = np.append(block_edges, samples.size)
    centres_s = (np.arange(num_frames) + 0.5) / fps
    lo = np.clip(np.round((centres_s - window_s / 2) * GRID_HZ).astype(np.int64), 0, block_energy.size)
    hi = np.clip(np.round((centres_s + window_s / 2) * GRID_HZ).astype(np.int64), 0, block_energy.size)
    count = sample_at[hi] - sample_at[lo]
    rms = np.sqrt(np.where(count > 0, (cumulative[hi] - cumulative[lo]) / np.maximum(count, 1), 0.0))
    db = 20.0 * np.log10(np.maximum(rms, 1e-9))
    return np.maximum(db, LOUDNESS_FLOOR_DBFS)


def loudness_level(
    loudness_db: np.ndarray, range_db: float = 36.0, reference_db: float = LOUDNESS_REFERENCE_DBFS
) -> np.ndarray:
    """Per-frame loudness (dBFS) mapped to 0 (range_db below reference_db or quieter) .. 1 (reference_db
    or louder). Frame by frame: a frame's level never depends on the rest of the track."""
    return np.clip((loudness_db - (reference_db - range_db)) / range_db, 0.0, 1.0)


def mouth_from_phonemes(phonemes: tuple[PhonemeTiming, ...], backend: str, level: np.ndarray, fps: int) -> np.ndarray:
    """Viseme mouth curves for the video frames.

    phonemes: timings from the speech stage. backend: "piper" / "hibari" (picks the alignment lag).
    level: (T,) loudness level 0..1 from :func:`loudness_level`. Returns float32 (T, 6), columns MOUTH_NAMES.
    """
    num_frames = level.shape[0]
    per_frame = GRID_HZ // fps
    starts_s, targets = viseme_intervals(phonemes)
    starts_s = starts_s - ALIGNMENT_LAG_S.get(backend, 0.0)
    grid_s = (np.arange(num_frames * per_frame) + 0.5) / GRID_HZ
    index = np.searchsorted(starts_s, grid_s, side="right") - 1
    raw = np.where((index >= 0)[:, None], targets[np.clip(index, 0, None)], 0.0)
    # coarticulation: neighbouring visemes blend over ~90 ms; closures get a narrower window
    # and are max-pooled per frame, so even a 30 ms "b" shows as one closed frame
    mouth = _hann_smooth(raw, LIP_BLEND_S).reshape(num_frames, per_frame, -1).mean(axis=1)
    jaw = _hann_smooth(raw[:, JAW : JAW + 1], JAW_BLEND_S).reshape(num_frames, per_frame).mean(axis=1)
    press = _hann_smooth(raw[:, PRESS : PRESS + 1], PRESS_BLEND_S).reshape(num_frames, per_frame).mean(axis=1)
    # every closure shows: the frame holding the middle of a p/b/m is fully shut, even a 30 ms "b"
    closed = targets[:, PRESS] >= 1.0
    ends_s = np.append(starts_s[1:], np.inf)
    closure_frames = (0.5 * (starts_s[closed] + ends_s[closed]) * fps).astype(np.int64)
    press = np.clip(press * 1.25, 0.0, 1.0)
    np.maximum.at(press, closure_frames[(closure_frames >= 0) & (closure_frames < num_frames)], 1.0)
    mouth[:, JAW] = jaw
    mouth[:, PRESS] = press
    # the voice sets how far the jaw drops: quiet syllables open less, silence closes
    gate = np.clip(level / 0.15, 0.0, 1.0)
    voiced = np.clip(level, 0.0, 1.0)
    jaw = (1.0 - JAW_VOICE_SHARE) * mouth[:, JAW] + JAW_VOICE_SHARE * 0.6 * voiced
    mouth[:, JAW] = jaw * (JAW_LOUDNESS_FLOOR + (1.0 - JAW_LOUDNESS_FLOOR) * level) * gate * (1.0 - press)
    mouth[:, [WIDE, ROUND, FUNNEL, TEETH]] *= (0.5 + 0.5 * gate)[:, None]
    return mouth.astype(np.float32)


def silence_closure(level: np.ndarray, fps: int) -> np.ndarray:
    """(T,) lip_press 0..1 that closes the lips while the voice is silent.

    A portrait may smile with its lips apart; at rest people close them, so in silence the
    lips come together (a no-op for a portrait whose lips already meet). The closure follows
    the loudness level (T,) 0..1 with a ~80 ms ease, so it releases as a word starts.
    """
    if level.size == 0:
        return level.astype(np.float32)
    closed = 1.0 - np.clip(level / SILENCE_LEVEL, 0.0, 1.0)
    radius = max(1, int(round(SILENCE_EASE_S * fps)))
    kernel = np.hanning(2 * radius + 3)[1:-1]
    kernel /= kernel.sum()
    eased = convolve_valid(np.pad(closed, radius, mode="edge"), kernel)
    return (REST_LIP_PRESS * np.clip(eased, 0.0, 1.0)).astype(np.float32)


def mouth_from_audio(audio: np.ndarray, sample_rate: int, level: np.ndarray, fps: int) -> np.ndarray:
    """Mouth curves from the audio alone (no phoneme timings): loudness opens the jaw,
    the spectrum picks width, rounding and the fricative teeth shape.

    audio: float32 (num_samples,). level: (T,) loudness level 0..1. Returns float32 (T, 6).
    """
    num_frames = level.shape[0]
    mouth = np.zeros((num_frames, len(MOUTH_NAMES)), dtype=np.float64)
    if num_frames == 0 or audio.size == 0:
        return mouth.astype(np.float32)
    window = 1 << int(np.ceil(np.log2(sample_rate * 0.032)))
    centres = ((np.arange(num_frames) + 0.5) / fps * sample_rate).astype(np.int64)
    padded = np.pad(np.asarray(audio, dtype=np.float32), (window, window))
    frames = padded[(centres + window // 2)[:, None] + np.arange(window)[None, :]]
    power = np.abs(scipy.fft.rfft(frames * np.hanning(window).astype(np.float32)[None, :], axis=1)) ** 2
    freqs_hz = np.fft.rfftfreq(window, 1.0 / sample_rate)
    total = power.sum(axis=1) + 1e-12
    low = power[:, freqs_hz < 1000].sum(axis=1) / total  # vowels with an open jaw or rounding
    high = power[:, freqs_hz > 3500].sum(axis=1) / total  # fricatives: s, sh, f
    centroid_hz = (power * freqs_hz[None, :]).sum(axis=1) / total
    # a short (40 ms) loudness window follows syllables rather than phrases, and closes at pause edges
    syllable = loudness_level(frame_loudness_db(audio, sample_rate, fps, num_frames, window_s=0.04))
    voiced = np.clip(syllable / 0.3, 0.0, 1.0)
    fricative = np.clip((high - 0.35) / 0.4, 0.0, 1.0)
    gate = np.clip(syllable / 0.2, 0.0, 1.0) * np.clip((level - 0.1) / 0.2, 0.0, 1.0)
    # open vowels put more of the voice's low band above 500 Hz (a high first formant)
    band = power[:, (freqs_hz >= 100) & (freqs_hz < 1200)].sum(axis=1) + 1e-12
    openness = np.clip((power[:, (freqs_hz >= 500) & (freqs_hz < 1200)].sum(axis=1) / band - 0.2) / 0.6, 0.0, 1.0)
    mouth[:, JAW] = 0.8 * syllable**1.5 * (0.5 + 0.7 * openness) * (1.0 - 0.7 * fricative) * gate
    mouth[:, WIDE] = voiced * np.clip((centroid_hz - 1200.0) / 1500.0, 0.0, 1.0) * 0.5
    mouth[:, ROUND] = voiced * np.clip((low - 0.75) / 0.2, 0.0, 1.0) * 0.5
    mouth[:, TEETH] = voiced * fricative * 0.5
    # a short smoothing at frame rate, so single noisy frames do not flicker
    kernel = np.array([0.25, 0.5, 0.25])
    padded_mouth = np.pad(mouth, ((1, 1), (0, 0)), mode="edge")
    mouth = kernel[0] * padded_mouth[:-2] + kernel[1] * padded_mouth[1:-1] + kernel[2] * padded_mouth[2:]
    return mouth.astype(np.float32)
