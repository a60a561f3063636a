"""Stage 3b: the Motion Governor (see DESIGN.md, "Governor").

Scales the motion of a :class:`MotionTrack` by what the script says at each
video frame: calm during pauses, fuller on emphasis. The same pure-numpy code
runs after every motion backend.

* Compact layouts (70 or 73 dims, ``D < 200``): the expression, pose and
  translation are gated *relative to the reference frame* (the portrait's own
  coefficients; zeros for the embedded generator):
  ``out[t] = reference + (coeffs[t] - reference) * gain[t]``. The crop dims
  ``70:73`` are never touched.
* Full 3DMM (257 dims, ``D >= 200``): expression outliers are first clamped
  per dimension to ``mean +- k * sigma`` over the track, pose angles are
  smoothed with a centred moving average, then the same gating is applied.
  Identity, texture and lighting (``id``, ``tex``, ``gamma``) are never touched.

The gain per frame is one piecewise-linear curve through three points,
``intent 0 (pause) -> pause_gain``, ``0.5 (neutral) -> neutral_gain``,
``1 (emphasis) -> emphasis_gain``; the seed's numbers 70 %, 82.5 %, 100 % are
the defaults.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple

import numpy as np

from .errors import InputError
from .types import LAYOUTS, IntentTimingMap, MotionTrack, layout_for_dims

logger = logging.getLogger(__name__)

#: Widths below this are compact (SadTalker audio2coeff) layouts, as in the seed.
FULL_3DMM_MIN_DIMS = 200
#: The slices the intent gating scales; everything else passes through bit-identical.
GATED_SLICES = ("exp", "angle", "trans")
#: Intent values of the three curve points (pause, neutral, emphasis).
INTENT_POINTS = (0.0, 0.5, 1.0)


class FieldSpec(NamedTuple):
    """How the app shows one numeric GovernorConfig field as a slider."""

    minimum: float
    maximum: float
    step: float
    label: str
    help: str


@dataclass(frozen=True)
class GovernorConfig:
    """Every parameter of the governor; the app's controls are exactly these fields.

    Ranges and help texts are in :data:`GOVERNOR_FIELDS` (numeric sliders) and
    :data:`FIELD_DOCS` (all fields).
    """

    enabled: bool = True  # apply the governor at all; False passes the motion through unchanged
    pause_gain: float = 0.70  # motion gain at intent 0.0 (pause), multiplier, 0..1.5
    neutral_gain: float = 0.825  # motion gain at intent 0.5 (neutral speech), multiplier, 0..1.5
    emphasis_gain: float = 1.0  # motion gain at intent 1.0 (full emphasis), multiplier, 0..1.5
    expression_clamp_sigma: float = 3.0  # k in mean +- k*sigma expression clamp, sigmas, 0.5..6 (257-dim only)
    pose_smoothing_s: float = 0.2  # pose-angle moving-average window, seconds, 0..1, 0 = off (257-dim only)

    def validate(self) -> GovernorConfig:
        """Check types and ranges; returns self so calls chain.

        Raises InputError (a ValueError) naming the field and its range.
        """
        if not isinstance(self.enabled, (bool, np.bool_)):
            raise InputError(f"governor 'enabled' must be true or false, got {self.enabled!r}")
        for name, spec in GOVERNOR_FIELDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise InputError(
                    f"governor '{name}' must be a number in [{spec.minimum}, {spec.maximum}], got {value!r}"
                )
            if not math.isfinite(value) or not spec.minimum <= value <= spec.maximum:
                raise InputError(
                    f"governor '{name}' = {value} is out of range [{spec.minimum}, {spec.maximum}] ({spec.help})"
                )
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GovernorConfig:
        """Build and validate a config from a persona's [governor] table or a request.

        Missing keys take the defaults; an unknown key is an InputError naming it.
        """
        if not isinstance(data, dict):
            raise InputError(f"governor settings must be a table of fields, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                raise InputError(f"unknown governor key '{key}' (known: {', '.join(known)})")
        return cls(**_coerced(data)).validate()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON/TOML friendly)."""
        return asdict(self)

    def updated(self, **changes: Any) -> GovernorConfig:
        """A copy with the given fields changed; ``None`` values mean "keep this one"."""
        given = {key: value for key, value in changes.items() if value is not None}
        return GovernorConfig.from_dict({**self.to_dict(), **given})


def _coerced(data: dict[str, Any]) -> dict[str, Any]:
    """TOML writes 1 for 1.0: turn whole numbers into floats, leave the rest for validate()."""
    out = dict(data)
    for name in GOVERNOR_FIELDS:
        value = out.get(name)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


#: Slider specs of the numeric fields: name -> (min, max, step, label, help).
GOVERNOR_FIELDS: dict[str, FieldSpec] = {
    "pause_gain": FieldSpec(0.0, 1.5, 0.025, "Pause gain", "motion kept during pauses (intent 0), multiplier"),
    "neutral_gain": FieldSpec(
        0.0, 1.5, 0.025, "Neutral gain", "motion kept in neutral speech (intent 0.5), multiplier"
    ),
    "emphasis_gain": FieldSpec(0.0, 1.5, 0.025, "Emphasis gain", "motion kept on full emphasis (intent 1), multiplier"),
    "expression_clamp_sigma": FieldSpec(
        0.5, 6.0, 0.1, "Expression clamp (sigma)", "clamp each expression dim to mean +- k*sigma (257-dim 3DMM only)"
    ),
    "pose_smoothing_s": FieldSpec(
        0.0,
        1.0,
        0.02,
        "Pose smoothing (s)",
        "moving-average window for head angles, seconds; 0 = off (257-dim 3DMM only)",
    ),
}

#: One help line per field, the boolean included.
FIELD_DOCS: dict[str, str] = {
    "enabled": "apply the governor; off passes the generated motion through unchanged",
    **{name: spec.help for name, spec in GOVERNOR_FIELDS.items()},
}


def gain_curve(frame_intents: np.ndarray, config: GovernorConfig) -> np.ndarray:
    """Motion gain per frame from the intent per frame.

    frame_intents: (T,) float, 0 pause .. 0.5 neutral .. 1 emphasis; values
        outside [0, 1] are clipped.
    Returns (T,) float32 gains, piecewise linear through the config's three
    points; all ones when the config is disabled.
    """
    intents = np.asarray(frame_intents, dtype=np.float64)
    if intents.ndim != 1:
        raise InputError(f"frame_intents must be a 1-D array (T,), got shape {intents.shape}")
    if not np.all(np.isfinite(intents)):
        bad = int(np.flatnonzero(~np.isfinite(intents))[0])
        raise InputError(
            f"frame_intents has NaN/inf values (first at frame {bad}): regenerate the speech's intent timing map"
        )
    if not config.enabled:
        return np.ones(intents.shape, dtype=np.float32)
    gains_at_points = (config.pause_gain, config.neutral_gain, config.emphasis_gain)
    return np.interp(np.clip(intents, 0.0, 1.0), INTENT_POINTS, gains_at_points).astype(np.float32)


def clamp_outliers(values: np.ndarray, k_sigma: float) -> np.ndarray:
    """Clamp each column to its mean +- k_sigma * std over the rows.

    values: (T, N) float. Returns a new (T, N) float32 array.
    """
    mean = values.mean(axis=0, dtype=np.float64)
    sigma = values.std(axis=0, dtype=np.float64)
    lower, upper = mean - k_sigma * sigma, mean + k_sigma * sigma
    return np.clip(values, lower, upper).astype(np.float32)


def smooth_centred(values: np.ndarray, window_frames: int) -> np.ndarray:
    """Centred moving average along the rows, edges padded with the edge value.

    values: (T, N) float. window_frames: frames averaged; an even window is
    widened by one so the average stays centred (no phase shift). A window of
    1 or less returns a copy. Returns (T, N) float32.
    """
    if window_frames <= 1 or values.shape[0] == 0:
        return values.astype(np.float32, copy=True)
    half = window_frames // 2
    width = 2 * half + 1
    padded = np.pad(values.astype(np.float64), ((half, half), (0, 0)), mode="edge")
    cumulative = np.cumsum(np.pad(padded, ((1, 0), (0, 0))), axis=0)
    return ((cumulative[width:] - cumulative[:-width]) / width).astype(np.float32)


def _check_inputs(track: MotionTrack, timing_map: IntentTimingMap) -> str:
    """Validate shapes and values; returns the layout name for the width."""
    coeffs = np.asarray(track.coeffs)
    if coeffs.ndim != 2:
        raise InputError(f"motion coefficients must be a 2-D array (frames, dims), got shape {coeffs.shape}")
    num_frames, dims = coeffs.shape
    try:
        layout = layout_for_dims(dims)
    except ValueError as e:
        raise InputError(f"cannot govern this motion track: {e}") from e
    if not np.all(np.isfinite(coeffs)):
        bad_frame = int(np.flatnonzero(~np.all(np.isfinite(coeffs), axis=1))[0])
        raise InputError(
            f"motion coefficients contain NaN/inf (first at frame {bad_frame}): regenerate the motion for this audio"
        )
    reference = np.asarray(track.reference)
    if reference.shape != (dims,) or not np.all(np.isfinite(reference)):
        raise InputError(f"reference coefficients must be {dims} finite values, got shape {reference.shape}")
    intents = np.asarray(timing_map.frame_intents)
    if timing_map.num_frames != num_frames or intents.shape != (num_frames,):
        raise InputError(
            f"the motion track has {num_frames} frames but the timing map has {timing_map.num_frames} "
            f"(frame_intents: {intents.shape[0] if intents.ndim else 0}): "
            "the motion must be regenerated from this audio"
        )
    if timing_map.fps != track.fps:
        raise InputError(
            f"the motion track runs at {track.fps} fps but the timing map at {timing_map.fps} fps: "
            "regenerate the motion from this audio"
        )
    return layout


def govern(track: MotionTrack, timing_map: IntentTimingMap, config: GovernorConfig) -> tuple[MotionTrack, np.ndarray]:
    """Apply the governor to a motion track.

    track: coeffs (T, D) with D in {70, 73, 257}, reference (D,).
    timing_map: frame_intents (T,) for the same T frames at the same fps.
    config: a GovernorConfig (validated here).
    Returns (a new MotionTrack with governed float32 coeffs (T, D), same fps,
    layout, reference and backend; the gain per frame, (T,) float32).
    The input track is never modified.
    """
    config.validate()
    layout = _check_inputs(track, timing_map)
    gains = gain_curve(timing_map.frame_intents, config)
    coeffs = np.array(track.coeffs, dtype=np.float32, copy=True)
    if not config.enabled:
        return replace(track, coeffs=coeffs, layout=layout), gains

    slices = LAYOUTS[layout]
    if coeffs.shape[1] >= FULL_3DMM_MIN_DIMS:
        exp_start, exp_stop = slices["exp"]
        angle_start, angle_stop = slices["angle"]
        coeffs[:, exp_start:exp_stop] = clamp_outliers(coeffs[:, exp_start:exp_stop], config.expression_clamp_sigma)
        window_frames = round(config.pose_smoothing_s * track.fps)
        coeffs[:, angle_start:angle_stop] = smooth_centred(coeffs[:, angle_start:angle_stop], window_frames)

    reference = np.asarray(track.reference, dtype=np.float32)
    for name in GATED_SLICES:
        start, stop = slices[name]
        rest = reference[start:stop]
        coeffs[:, start:stop] = rest + (coeffs[:, start:stop] - rest) * gains[:, None]
    if gains.size:
        logger.debug("governed %d frames (%s): gain %.3f..%.3f", gains.size, layout, gains.min(), gains.max())
    return replace(track, coeffs=coeffs, layout=layout), gains
