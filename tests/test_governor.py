"""Motion Governor: gain curve, compact gating, full-3DMM clamp and smoothing, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from persona_video.errors import InputError
from persona_video.governor import (
    FIELD_DOCS,
    GOVERNOR_FIELDS,
    GovernorConfig,
    gain_curve,
    govern,
    smooth_centred,
)
from persona_video.personas import list_personas
from persona_video.types import FPS, LAYOUTS, IntentTimingMap, MotionTrack, SegmentSpan, layout_for_dims


def make_timing(frame_intents: np.ndarray, fps: int = FPS) -> IntentTimingMap:
    intents = np.asarray(frame_intents, dtype=np.float32)
    duration_s = len(intents) / fps
    span = SegmentSpan(0, "neutral", 0.0, "hello", 0.0, duration_s)
    return IntentTimingMap(fps, intents, duration_s, len(intents), (span,))


def make_track(num_frames: int, dims: int, seed: int = 0, reference: np.ndarray | None = None) -> MotionTrack:
    rng = np.random.default_rng(seed)
    coeffs = rng.normal(0.0, 0.3, size=(num_frames, dims)).astype(np.float32)
    return MotionTrack(coeffs, FPS, layout_for_dims(dims), reference=reference)


def intents_ramp(num_frames: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, num_frames, dtype=np.float32)


# ---------------------------------------------------------------- config


def test_defaults_are_the_seed_numbers_and_round_trip() -> None:
    config = GovernorConfig()
    assert (config.pause_gain, config.neutral_gain, config.emphasis_gain) == (0.70, 0.825, 1.0)
    assert GovernorConfig.from_dict(config.to_dict()) == config
    assert set(FIELD_DOCS) == set(config.to_dict())
    assert set(GOVERNOR_FIELDS) == set(config.to_dict()) - {"enabled"}
    for name, spec in GOVERNOR_FIELDS.items():
        assert spec.minimum <= getattr(config, name) <= spec.maximum
        assert spec.step > 0 and spec.label and spec.help


def test_from_dict_rejects_unknown_key_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="unknown governor key 'pause_gian'"):
        GovernorConfig.from_dict({"pause_gian": 0.5})
    with pytest.raises(ValueError, match=r"'pause_gain' = 2.0 is out of range \[0.0, 1.5\]"):
        GovernorConfig.from_dict({"pause_gain": 2.0})
    with pytest.raises(ValueError, match=r"'expression_clamp_sigma' = 0.1 is out of range \[0.5, 6.0\]"):
        GovernorConfig(expression_clamp_sigma=0.1).validate()
    with pytest.raises(ValueError, match="'pose_smoothing_s' must be a number"):
        GovernorConfig.from_dict({"pose_smoothing_s": "fast"})
    with pytest.raises(ValueError, match="'enabled' must be true or false"):
        GovernorConfig.from_dict({"enabled": "yes"})
    assert GovernorConfig.from_dict({"emphasis_gain": 1}).emphasis_gain == 1.0


def test_updated_keeps_fields_given_as_none() -> None:
    config = GovernorConfig().updated(pause_gain=0.4, neutral_gain=None)
    assert config.pause_gain == 0.4 and config.neutral_gain == 0.825
    with pytest.raises(ValueError, match="neutral_gain"):
        GovernorConfig().updated(neutral_gain=-1.0)


def test_shipped_personas_carry_valid_governor_tables() -> None:
    personas = list_personas()
    assert personas
    for persona in personas:
        assert isinstance(persona.governor_config(), GovernorConfig)


# ---------------------------------------------------------------- gain curve


def test_gain_curve_exact_at_the_three_points_and_monotone_between() -> None:
    config = GovernorConfig()
    gains = gain_curve(np.array([0.0, 0.5, 1.0], dtype=np.float32), config)
    assert gains.dtype == np.float32
    np.testing.assert_allclose(gains, [0.70, 0.825, 1.0], rtol=0, atol=1e-7)
    dense = gain_curve(np.linspace(0, 1, 201), config)
    assert np.all(np.diff(dense) >= 0)
    assert gain_curve(np.array([0.8]), config)[0] == pytest.approx(0.825 + 0.6 * 0.175, abs=1e-6)


def test_gain_curve_custom_points_clipping_and_disabled() -> None:
    config = GovernorConfig(pause_gain=0.2, neutral_gain=1.2, emphasis_gain=0.4)
    np.testing.assert_allclose(
        gain_curve(np.array([0.0, 0.25, 0.5, 0.75, 1.0]), config), [0.2, 0.7, 1.2, 0.8, 0.4], atol=1e-6
    )
    np.testing.assert_allclose(gain_curve(np.array([-3.0, 7.0]), config), [0.2, 0.4], atol=1e-7)
    np.testing.assert_array_equal(gain_curve(np.array([0.0, 1.0]), GovernorConfig(enabled=False)), [1.0, 1.0])


def test_gain_curve_rejects_nan() -> None:
    with pytest.raises(InputError, match="NaN/inf values \\(first at frame 2\\)"):
        gain_curve(np.array([0.5, 0.5, np.nan]), GovernorConfig())


# ---------------------------------------------------------------- compact layouts


@pytest.mark.parametrize("dims", [70, 73])
def test_compact_gating_relative_to_reference(dims: int) -> None:
    reference = np.linspace(-0.5, 0.5, dims).astype(np.float32)
    track = make_track(50, dims, reference=reference)
    track.coeffs[10] = reference  # a frame at rest must stay at rest
    before = track.coeffs.copy()
    timing = make_timing(intents_ramp(50))
    governed, gains = govern(track, timing, GovernorConfig())

    np.testing.assert_array_equal(track.coeffs, before)  # input untouched
    assert governed.coeffs.shape == (50, dims) and governed.coeffs.dtype == np.float32
    assert governed.layout == f"compact{dims}" and governed.fps == FPS
    np.testing.assert_array_equal(gains, gain_curve(timing.frame_intents, GovernorConfig()))
    expected = reference[:70] + (before[:, :70] - reference[:70]) * gains[:, None]
    np.testing.assert_allclose(governed.coeffs[:, :70], expected, atol=1e-6)
    np.testing.assert_array_equal(governed.coeffs[10], reference)
    if dims == 73:
        assert governed.coeffs[:, 70:73].tobytes() == before[:, 70:73].tobytes()


def test_compact_pause_frames_move_less_than_emphasis_frames() -> None:
    track = make_track(40, 70, seed=3)
    intents = np.r_[np.zeros(20), np.ones(20)].astype(np.float32)
    governed, _ = govern(track, make_timing(intents), GovernorConfig())
    ratio = np.abs(governed.coeffs) / np.maximum(np.abs(track.coeffs), 1e-12)
    np.testing.assert_allclose(ratio[:20][np.abs(track.coeffs[:20]) > 1e-3], 0.70, atol=1e-4)
    np.testing.assert_allclose(ratio[20:][np.abs(track.coeffs[20:]) > 1e-3], 1.0, atol=1e-4)


def test_disabled_config_is_identity() -> None:
    track = make_track(30, 73, seed=4)
    governed, gains = govern(track, make_timing(intents_ramp(30)), GovernorConfig(enabled=False))
    assert governed.coeffs.tobytes() == track.coeffs.tobytes()
    assert governed.coeffs is not track.coeffs
    np.testing.assert_array_equal(gains, np.ones(30, dtype=np.float32))


def test_govern_is_deterministic() -> None:
    track = make_track(30, 257, seed=5)
    timing = make_timing(intents_ramp(30))
    first, gains_first = govern(track, timing, GovernorConfig())
    second, gains_second = govern(track, timing, GovernorConfig())
    assert first.coeffs.tobytes() == second.coeffs.tobytes() and gains_first.tobytes() == gains_second.tobytes()


# ---------------------------------------------------------------- full 3DMM


def slice_of(coeffs: np.ndarray, name: str) -> np.ndarray:
    start, stop = LAYOUTS["full257"][name]
    return coeffs[:, start:stop]


def test_full_untouched_slices_bit_identical() -> None:
    track = make_track(60, 257, seed=6)
    governed, _ = govern(track, make_timing(intents_ramp(60)), GovernorConfig())
    for name in ("id", "tex", "gamma"):
        assert slice_of(governed.coeffs, name).tobytes() == slice_of(track.coeffs, name).tobytes(), name
    assert not np.array_equal(slice_of(governed.coeffs, "exp"), slice_of(track.coeffs, "exp"))


def test_full_clamps_an_injected_outlier_and_leaves_inliers() -> None:
    rng = np.random.default_rng(7)
    # uniform motion stays within 1.8 sigma, so only the injected value is an outlier
    track = MotionTrack(rng.uniform(-0.3, 0.3, size=(100, 257)).astype(np.float32), FPS, "full257")
    exp_start = LAYOUTS["full257"]["exp"][0]
    track.coeffs[37, exp_start + 5] = 25.0
    neutral = make_timing(np.ones(100, dtype=np.float32))  # emphasis gain 1.0: only the clamp changes values
    governed, _ = govern(track, neutral, GovernorConfig(pose_smoothing_s=0.0))

    column = track.coeffs[:, exp_start + 5].astype(np.float64)
    upper = column.mean() + 3.0 * column.std()
    assert governed.coeffs[37, exp_start + 5] == pytest.approx(upper, rel=1e-5)
    assert governed.coeffs[37, exp_start + 5] < 25.0 / 2
    inliers = np.ones(100, dtype=bool)
    inliers[37] = False
    np.testing.assert_array_equal(governed.coeffs[inliers, exp_start + 5], track.coeffs[inliers, exp_start + 5])
    # the other dims have no outlier: unchanged
    others = [d for d in range(64) if d != 5]
    np.testing.assert_array_equal(slice_of(governed.coeffs, "exp")[:, others], slice_of(track.coeffs, "exp")[:, others])


def test_full_smoothing_reduces_jitter_without_shifting_a_step() -> None:
    rng = np.random.default_rng(8)
    num_frames = 100
    step = np.where(np.arange(num_frames) < 50, 0.0, 0.2)
    yaw = (step + rng.normal(0, 0.02, num_frames)).astype(np.float32)
    coeffs = np.zeros((num_frames, 257), dtype=np.float32)
    angle_start = LAYOUTS["full257"]["angle"][0]
    coeffs[:, angle_start] = yaw
    coeffs[:, angle_start + 1] = step  # a clean step to locate the midpoint
    track = MotionTrack(coeffs, FPS, "full257")
    governed, _ = govern(track, make_timing(np.ones(num_frames)), GovernorConfig(pose_smoothing_s=0.2))

    smooth_yaw = governed.coeffs[:, angle_start]
    jitter_before = np.std(np.diff(yaw[5:45]))
    jitter_after = np.std(np.diff(smooth_yaw[5:45]))
    assert jitter_after < 0.5 * jitter_before
    smooth_step = governed.coeffs[:, angle_start + 1].astype(np.float64)
    # centred window: symmetric around the step edge at 49.5, so the 0.1 crossing stays there
    np.testing.assert_allclose(smooth_step[:50] + smooth_step[::-1][:50], 0.2, atol=1e-6)
    assert smooth_step[47] == 0.0 and smooth_step[52] == pytest.approx(0.2)
    assert 0 < smooth_step[49] < 0.1 < smooth_step[50] < 0.2


def test_smoothing_window_zero_is_off_and_even_window_stays_centred() -> None:
    values = np.arange(10, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(smooth_centred(values, 0), values)
    np.testing.assert_allclose(smooth_centred(values, 4)[2:8, 0], values[2:8, 0], atol=1e-6)  # a ramp stays put


# ---------------------------------------------------------------- errors


def test_error_coeffs_not_2d() -> None:
    track = MotionTrack(np.zeros((10, 70), dtype=np.float32), FPS, "compact70")
    object.__setattr__(track, "coeffs", np.zeros(70, dtype=np.float32))
    with pytest.raises(InputError, match=r"2-D array \(frames, dims\), got shape \(70,\)"):
        govern(track, make_timing(np.zeros(10)), GovernorConfig())


def test_error_width_without_layout() -> None:
    track = MotionTrack(np.zeros((10, 64), dtype=np.float32), FPS, "compact70")
    with pytest.raises(InputError, match="no coefficient layout has 64 dimensions"):
        govern(track, make_timing(np.zeros(10)), GovernorConfig())


def test_error_nan_in_coeffs() -> None:
    track = make_track(10, 70)
    track.coeffs[6, 3] = np.nan
    with pytest.raises(InputError, match="NaN/inf \\(first at frame 6\\)"):
        govern(track, make_timing(np.zeros(10)), GovernorConfig())


def test_error_frame_count_mismatch_names_both_numbers() -> None:
    with pytest.raises(InputError, match="has 62 frames but the timing map has 60.*regenerated from this audio"):
        govern(make_track(62, 70), make_timing(np.zeros(60)), GovernorConfig())


def test_error_nan_in_frame_intents() -> None:
    intents = np.full(10, 0.5, dtype=np.float32)
    intents[4] = np.nan
    with pytest.raises(InputError, match="frame_intents has NaN"):
        govern(make_track(10, 70), make_timing(intents), GovernorConfig())


def test_error_invalid_config_in_govern() -> None:
    with pytest.raises(InputError, match="emphasis_gain"):
        govern(make_track(10, 70), make_timing(np.zeros(10)), GovernorConfig(emphasis_gain=9.0))


def test_the_timing_map_reads_back_exactly_as_written() -> None:
    """A re-render governs with the intents read from timing.json: they must be the very numbers
    the first run used, or frames that did not change would be drawn again."""
    timing = make_timing(np.random.default_rng(9).random(200).astype(np.float32))
    again = IntentTimingMap.from_dict(json.loads(json.dumps(timing.to_dict())))
    assert again.frame_intents.dtype == np.float32
    assert again.frame_intents.tobytes() == timing.frame_intents.tobytes()
    assert np.abs(timing.frame_intents - np.round(timing.frame_intents, 4)).max() < 1e-6
