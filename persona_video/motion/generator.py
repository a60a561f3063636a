"""Stage 3a, embedded backend: motion coefficients from speech, no model, no torch.

``generate_motion(speech, style)`` returns a :class:`MotionTrack` in the
compact-70 layout (``exp 0:64, angle 64:67, trans 67:70``) at 25 fps with
``T = speech.timing.num_frames`` rows, zero reference, backend "embedded".
The meaning of every index is fixed in :mod:`persona_video.types`; this
generator writes these and leaves the other expression dimensions at zero:

- 0 ``jaw_open``, 1 ``lip_wide``, 2 ``lip_round``, 3 ``lip_press``,
  8 ``lip_funnel``, 9 ``teeth_show``: the mouth. Viseme targets from the
  phoneme timings (closed and pressed for p/b/m, rounded for o/u/w, wide for
  i/e, open for a, funnel for sh/ch, teeth for f/v), blended over ~90 ms,
  moved earlier by the backend's alignment lag (Piper: 40 ms), and the jaw
  scaled by the loudness envelope, so the mouth closes in pauses and opens
  with the voice; in silence ``lip_press`` also brings lips that part at
  rest (a smiling portrait) together. Without phoneme timings the audio alone drives it
  (loudness and spectral shape). See :mod:`persona_video.motion.visemes`.
- 5 ``blink_left``, 6 ``blink_right``: blinks, both eyes together, fully
  shut (1.0) for one or two frames in a 160-200 ms blink; gamma-distributed
  intervals around ``style.blink_rate_per_min`` (never longer than 11 s,
  never more than 40 per minute), sometimes a double blink, and a blink that
  falls just before a pause is moved onto the pause.
- 7 ``brow_raise`` and 4 ``smile``: touches on emphasis (brows at the onset,
  a smile over the phrase) scaled by ``style.expressiveness``, plus a faint
  resting smile.
- 64-66 yaw, pitch, roll (radians): smooth filtered-noise drift of a few
  degrees whose size follows speech activity (calm in pauses), small pitch
  bobs with the syllable energy, and a nod (chin down, then back with a small
  rebound, ~400 ms) on each emphasis onset; scaled by ``style.head_amplitude``
  and ``style.nod_strength`` and kept inside the animator's safe range.
- 67-69 trans x, y (face heights) and z (relative scale): a small sway
  that follows yaw and pitch, and a slight lean-in on emphasis.

``still=True`` holds the head (angles and trans zero) and animates the face.
Same inputs and seed give the identical array.

Streaming: every frame depends only on the speech up to MOTION_LOOKAHEAD_S
after it, and the random drift and blinks are drawn on the whole-track clock
(one child stream per random quantity, read from its start), so motion made on
a prefix of the speech (the audio, spans and phonemes of the sentences spoken
so far, the timing map rebuilt on them) is bit-identical to the whole track's
on its first ``final_frames(prefix_duration_s, fps, finished=False)`` frames.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..errors import InputError
from ..expression import (
    BLINK_LEFT,
    BLINK_RIGHT,
    BROW_RAISE,
    JAW_OPEN,
    LIP_FUNNEL,
    LIP_PRESS,
    LIP_ROUND,
    LIP_WIDE,
    MAX_PITCH_RAD,
    MAX_ROLL_RAD,
    MAX_YAW_RAD,
    SMILE,
    TEETH_SHOW,
    TRANS_Z,
    YAW,
)
from ..personas import MotionStyle
from ..types import FPS, MotionTrack, Speech, whole_frames
from .visemes import (
    FUNNEL,
    JAW,
    PRESS,
    ROUND,
    TEETH,
    WIDE,
    convolve_valid,
    frame_loudness_db,
    loudness_level,
    mouth_from_audio,
    mouth_from_phonemes,
    silence_closure,
)

logger = logging.getLogger(__name__)

COMPACT70_DIMS = 70
#: Mouth columns of visemes.py -> expression indices.
_MOUTH_TO_EXPRESSION = {
    JAW: JAW_OPEN,
    WIDE: LIP_WIDE,
    ROUND: LIP_ROUND,
    PRESS: LIP_PRESS,
    FUNNEL: LIP_FUNNEL,
    TEETH: TEETH_SHOW,
}

# Head motion at head_amplitude 1, radians of standard deviation.
_DRIFT_STD_RAD = {"yaw": 0.045, "pitch": 0.025, "roll": 0.018}
_NOD_RAD = 0.05  # nod depth at nod_strength 1 and full intensity
_NOD_S = 0.4  # chin down and back
_MIN_NOD_GAP_S = 0.6
# Blinks
_MAX_BLINK_GAP_S = 11.0
_MIN_BLINK_GAP_S = 1.5  # caps the rate at 40 per minute
_DOUBLE_BLINK_P = 0.12
_BLINK_TO_PAUSE_S = 0.6  # a blink due this soon before a pause onset moves onto it
# Smoothing widths, seconds of Gaussian sigma (kernels reach 3 sigma + 1 frame)
_ACTIVITY_SIGMA_S = 0.25  # how lively the head is
_SYLLABLE_TREND_SIGMA_S = 0.35  # the loudness trend taken out of the syllable bobs (was 0.5: a shorter lookahead)
_DRIFT_SIGMAS_S = (0.45, 1.5)  # fast and slow drift components
# Their weights. Each series has unit std in theory; over a 25 s track (a typical video) its
# realised std averages 0.96 (fast) and 0.87 (slow), so these are the former 0.75 and 0.65
# (applied to series scaled to unit realised std) divided by that: a typical video drifts as much.
_DRIFT_WEIGHTS = (0.78, 0.75)

#: Seconds of speech after a frame that can still change its motion: the widest reach of any
#: frame into the speech after its end (25 fps). The syllable bobs smooth the loudness over
#: 27 frames (1.08 s) and a frame's loudness reads 40 ms past its end: 1.12 s, the widest.
#: The head's liveliness smooths over 19 frames (0.76 s) the loudness (itself smoothed over
#: 7 frames: 1.08 s) and the intents, which see the spans 0.17 s past a frame's end
#: (speech/timing.py): 0.93 s. A blink looks 0.6 s ahead for a pause onset: 0.81 s. Brows and
#: lean 0.69 s, the mouth 0.16 s. The drift needs none: its white noise is drawn on the
#: whole-track clock. 1.2 s leaves two frames to spare (the tests fail at 1.0 s).
MOTION_LOOKAHEAD_S = 1.2


def final_frames(duration_s: float, fps: int, finished: bool) -> int:
    """How many leading frames of motion made on speech of duration_s seconds are final.

    finished: the speech is complete; then every frame, ``types.whole_frames``, as the
    timing map counts them. Else the frames that end at or before duration_s -
    MOTION_LOOKAHEAD_S: later speech cannot change them (generate_motion, the timing map's
    frame_intents and govern for the compact layouts give the same values then).
    Holds when the prefix ends where a sentence's audio ends (its trailing pause included):
    the spans and phonemes of later sentences start at or after duration_s.
    """
    total = whole_frames(duration_s, fps)
    if finished:
        return total
    # 1e-9 frames: (duration_s - lookahead) * fps lands just under a whole number in floats
    return max(0, min(total, math.floor((duration_s - MOTION_LOOKAHEAD_S) * fps + 1e-9)))


def _gaussian_kernel(sigma_frames: float) -> np.ndarray:
    """(2 * radius + 1,) Gaussian weights summing to 1, radius = 3 sigma + 1 frames."""
    radius = int(3 * sigma_frames) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    return kernel / kernel.sum()


def _smooth(values: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian-smooth a (T,) or (T, C) array along time with edge padding."""
    if sigma_frames <= 0 or values.shape[0] == 0:
        return values.copy()
    kernel = _gaussian_kernel(sigma_frames)
    radius = kernel.size // 2
    padded = np.pad(values, ((radius, radius),) + ((0, 0),) * (values.ndim - 1), mode="edge")
    return convolve_valid(padded, kernel)


def _filtered_noise(seed: np.random.SeedSequence, num_frames: int, sigma_frames: float) -> np.ndarray:
    """Smooth noise (T,) with unit standard deviation (low-pass filtered white noise).

    The white noise is drawn from seed's stream from its start, one value per frame (plus
    the kernel's reach each side), and the result is divided by the filter's own standard
    deviation rather than the realised one: frame t is the same number for every T > t.
    """
    kernel = _gaussian_kernel(sigma_frames)
    white = np.random.default_rng(seed).standard_normal(num_frames + kernel.size - 1)
    return convolve_valid(white, kernel) / np.sqrt(np.sum(kernel**2))


def _frame_intents(speech: Speech, num_frames: int) -> np.ndarray:
    """The timing map's per-frame intents, padded or cut to num_frames (neutral where missing)."""
    intents = np.asarray(speech.timing.frame_intents, dtype=np.float64)[:num_frames]
    if intents.shape[0] < num_frames:
        intents = np.pad(intents, (0, num_frames - intents.shape[0]), constant_values=0.5)
    return np.clip(intents, 0.0, 1.0)


def _emphasis_onsets(speech: Speech, intents: np.ndarray, fps: int) -> tuple[np.ndarray, np.ndarray]:
    """(onset_s (K,), intensity (K,)) of emphasis: from the segment spans, else (a map without
    spans) from intent rises."""
    spans = [s for s in speech.timing.spans if s.intent_type == "emphasis"]
    if speech.timing.spans:
        onsets_s = np.array([s.start_s for s in spans])
        strength = np.array([s.intensity for s in spans])
    else:
        emphatic = intents > 0.75
        rises = np.flatnonzero(emphatic[1:] & ~emphatic[:-1]) + 1
        if emphatic.size and emphatic[0]:
            rises = np.concatenate([[0], rises])
        onsets_s = rises / fps
        strength = np.clip((intents[rises] - 0.5) * 2.0, 0.0, 1.0) if rises.size else np.zeros(0)
    keep, last_s = [], -np.inf
    for i, onset_s in enumerate(onsets_s):
        if onset_s - last_s >= _MIN_NOD_GAP_S:
            keep.append(i)
            last_s = onset_s
    return onsets_s[keep], strength[keep]


def _emphasis_envelope(speech: Speech, intents: np.ndarray, fps: int, first_s: float | None) -> np.ndarray:
    """(T,) 0..1 emphasis indicator; first_s limits each phrase to its first seconds (brows)."""
    num_frames = intents.shape[0]
    times_s = (np.arange(num_frames) + 0.5) / fps
    spans = [s for s in speech.timing.spans if s.intent_type == "emphasis"]
    if not speech.timing.spans:
        return np.clip((intents - 0.5) * 2.0, 0.0, 1.0)
    envelope = np.zeros(num_frames)
    for span in spans:
        end_s = span.end_s if first_s is None else min(span.end_s, span.start_s + first_s)
        inside = (times_s >= span.start_s - 0.05) & (times_s < end_s)
        envelope = np.maximum(envelope, inside * (0.5 + 0.5 * span.intensity))
    return envelope


def _blinks(
    seed: np.random.SeedSequence, num_frames: int, fps: int, rate_per_min: float, intents: np.ndarray
) -> np.ndarray:
    """(T,) eyelid closure 0..1 with irregular, full blinks.

    Each random quantity (gaps, first blink, doubles and their delay, the two profiles) has
    its own stream, read from its start one value per blink, so blink k is the same whatever
    the track's length.
    """
    closure = np.zeros(num_frames)
    duration_s = num_frames / fps
    if num_frames == 0:
        return closure
    gap_rng, first_rng, double_rng, delay_rng, profile_rng, second_profile_rng = (
        np.random.default_rng(child) for child in seed.spawn(6)
    )
    mean_gap_s = 60.0 / max(rate_per_min, 1e-3)
    count = int(duration_s / _MIN_BLINK_GAP_S) + 2  # more than fit: gaps are at least _MIN_BLINK_GAP_S
    gaps_s = np.clip(gap_rng.gamma(3.0, mean_gap_s / 3.0, count), _MIN_BLINK_GAP_S, _MAX_BLINK_GAP_S)
    first_s = first_rng.uniform(0.4, min(3.0, mean_gap_s))
    times_s = first_s + np.concatenate([[0.0], np.cumsum(gaps_s[:-1])])
    # people blink at the start of a pause: move a blink due within 0.6 s onto the pause onset
    pause = intents < 0.25
    pause_onsets_s = (np.flatnonzero(pause[1:] & ~pause[:-1]) + 1) / fps
    if pause_onsets_s.size:
        nxt = np.searchsorted(pause_onsets_s, times_s)
        ahead_s = np.where(nxt < pause_onsets_s.size, pause_onsets_s[np.minimum(nxt, pause_onsets_s.size - 1)], np.inf)
        times_s = np.where(ahead_s - times_s < _BLINK_TO_PAUSE_S, ahead_s, times_s)
    doubles = double_rng.random(count) < _DOUBLE_BLINK_P
    seconds_s = times_s + delay_rng.uniform(0.3, 0.4, count)
    # closing in one frame, shut for one or two, opening over two: 160-200 ms
    profiles = np.array([[0.5, 1.0, 0.6, 0.25, 0.0], [0.5, 1.0, 1.0, 0.6, 0.25]])
    starts_s = np.concatenate([times_s, seconds_s[doubles]])
    long_shut = np.concatenate([profile_rng.random(count), second_profile_rng.random(count)[doubles]]) < 0.5
    starts = (starts_s * fps).astype(np.int64)
    keep = starts < num_frames
    frames = starts[keep, None] + np.arange(profiles.shape[1])[None, :]
    chosen = profiles[long_shut[keep].astype(np.int64)]
    valid = frames < num_frames
    np.maximum.at(closure, frames[valid], chosen[valid])
    return closure


def _head_pose(
    seed: np.random.SeedSequence,
    speech: Speech,
    style: MotionStyle,
    intents: np.ndarray,
    level: np.ndarray,
    fps: int,
) -> np.ndarray:
    """(T, 6) yaw, pitch, roll (radians) and trans x, y, z."""
    num_frames = intents.shape[0]
    pose = np.zeros((num_frames, 6))
    if num_frames == 0:
        return pose
    # how lively the head is: calm in pauses, more with loud or emphatic speech
    activity = _smooth(0.25 + 0.45 * _smooth(level, 2.0) + 0.6 * intents, _ACTIVITY_SIGMA_S * fps)
    streams = iter(seed.spawn(6))  # one per axis and component
    for column, axis in enumerate(("yaw", "pitch", "roll")):
        drift = np.zeros(num_frames)
        for weight, sigma_s in zip(_DRIFT_WEIGHTS, _DRIFT_SIGMAS_S, strict=True):
            drift += weight * _filtered_noise(next(streams), num_frames, sigma_s * fps)
        pose[:, column] = _DRIFT_STD_RAD[axis] * style.head_amplitude * activity * drift
    # small pitch bobs with the syllable energy (band-passed loudness)
    syllables = _smooth(level, 1.0) - _smooth(level, _SYLLABLE_TREND_SIGMA_S * fps)
    pose[:, 1] += 0.03 * style.head_amplitude * syllables
    # nods: chin down over _NOD_S, then a small rebound
    times_s = (np.arange(num_frames) + 0.5) / fps
    onsets_s, strength = _emphasis_onsets(speech, intents, fps)
    if onsets_s.size:
        phase = (times_s[None, :] - (onsets_s[:, None] - 0.06)) / _NOD_S
        down = np.where((phase >= 0) & (phase < 1), np.sin(np.pi * np.clip(phase, 0, 1)) ** 2, 0.0)
        rebound = np.where((phase >= 1) & (phase < 1.6), -0.25 * np.sin(np.pi * (phase - 1) / 0.6) ** 2, 0.0)
        depth = _NOD_RAD * style.nod_strength * (0.6 + 0.4 * strength)
        pose[:, 1] += (depth[:, None] * (down + rebound)).sum(axis=0)
    # stay inside the animator's safe range with a soft limit
    for column, limit in enumerate((MAX_YAW_RAD, MAX_PITCH_RAD, MAX_ROLL_RAD)):
        pose[:, column] = 0.9 * limit * np.tanh(pose[:, column] / (0.9 * limit))
    lean = _smooth(_emphasis_envelope(speech, intents, fps, None), 0.2 * fps)
    pose[:, 3] = 0.12 * pose[:, 0]
    pose[:, 4] = 0.08 * pose[:, 1]
    pose[:, 5] = 0.012 * style.head_amplitude * lean
    return pose


def generate_motion(speech: Speech, style: MotionStyle, *, seed: int = 0, still: bool = False) -> MotionTrack:
    """Motion coefficients for a speech result.

    speech: audio (num_samples,), sample_rate, timing (T = timing.num_frames frames at 25 fps),
        phonemes (may be empty: the audio alone then drives the mouth), backend.
    style: the persona's motion style (head amplitude, nod strength, blink rate, expressiveness).
    seed: fixes blinks and head drift; the same inputs and seed give the identical array.
    still: hold the head (angles and trans zero), animate only the face.
    Returns a MotionTrack with coeffs float32 (T, 70), layout "compact70", fps 25, zero reference.
    """
    fps = speech.timing.fps
    if fps != FPS:
        raise InputError(f"timing map is at {fps} fps: the motion stage needs {FPS} fps; rebuild it at {FPS}")
    if speech.sample_rate <= 0:
        raise InputError(f"speech sample rate is {speech.sample_rate}: give the audio's real rate in Hz")
    num_frames = int(speech.timing.num_frames)
    audio = np.asarray(speech.audio, dtype=np.float32).reshape(-1)
    intents = _frame_intents(speech, num_frames)
    level = loudness_level(frame_loudness_db(audio, speech.sample_rate, fps, num_frames))
    if speech.phonemes:
        mouth = mouth_from_phonemes(speech.phonemes, speech.backend, level, fps)
    else:
        logger.info("no phoneme timings from %s: driving the mouth from the audio alone", speech.backend)
        mouth = mouth_from_audio(audio, speech.sample_rate, level, fps)

    mouth[:, PRESS] = np.maximum(mouth[:, PRESS], silence_closure(level, fps))
    seeds = np.random.SeedSequence(seed).spawn(2)
    coeffs = np.zeros((num_frames, COMPACT70_DIMS), dtype=np.float64)
    for column, index in _MOUTH_TO_EXPRESSION.items():
        coeffs[:, index] = mouth[:, column]
    closure = _blinks(seeds[0], num_frames, fps, style.blink_rate_per_min, intents)
    coeffs[:, BLINK_LEFT] = closure
    coeffs[:, BLINK_RIGHT] = closure
    brows = _smooth(_emphasis_envelope(speech, intents, fps, 0.8), 0.12 * fps)
    phrase = _smooth(_emphasis_envelope(speech, intents, fps, None), 0.2 * fps)
    coeffs[:, BROW_RAISE] = np.clip(0.55 * style.expressiveness * brows, 0.0, 1.0)
    coeffs[:, SMILE] = np.clip(style.expressiveness * (0.08 + 0.25 * phrase), 0.0, 1.0)
    if not still:
        pose = _head_pose(seeds[1], speech, style, intents, level, fps)
        coeffs[:, YAW : TRANS_Z + 1] = pose
    return MotionTrack(coeffs=coeffs.astype(np.float32), fps=fps, layout="compact70", backend="embedded")
