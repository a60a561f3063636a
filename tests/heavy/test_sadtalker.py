"""SadTalker at its .mat handoff: files in SadTalker's exact layout, read -> govern -> write,
then read back the way its renderer reads them. Needs no torch and no SadTalker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from persona_video.errors import BackendUnavailable, InputError
from persona_video.governor import GovernorConfig, govern
from persona_video.types import IntentTimingMap
from persona_video.weights.sadtalker_runner import SadTalkerRunner, read_coeff_mat, write_coeff_mat

NUM_FRAMES = 50


@pytest.fixture()
def sadtalker_mats(tmp_path: Path) -> tuple[Path, Path]:
    """SadTalker's two files: audio2coeff's (T, 70) driving coefficients and the cropper's (1, 73) source."""
    rng = np.random.default_rng(7)
    source = rng.normal(0, 0.3, (1, 73)).astype(np.float32)
    source[0, 70:73] = [256.0, 128.0, 96.0]  # crop parameters: image size and offsets, never scaled
    driving = (source[:, :70] + rng.normal(0, 0.5, (NUM_FRAMES, 70))).astype(np.float32)
    driving_path = tmp_path / "portrait##speech.mat"
    source_path = tmp_path / "portrait.mat"
    scipy.io.savemat(str(driving_path), {"coeff_3dmm": driving})
    scipy.io.savemat(
        str(source_path), {"coeff_3dmm": source, "full_3dmm": rng.normal(0, 1, (1, 257)).astype(np.float32)}
    )
    return driving_path, source_path


def _timing(frame_intents: np.ndarray) -> IntentTimingMap:
    return IntentTimingMap(
        fps=25,
        frame_intents=frame_intents.astype(np.float32),
        total_duration=len(frame_intents) / 25,
        num_frames=len(frame_intents),
        spans=(),
    )


def test_round_trip_through_the_governor_keeps_sadtalkers_layout(
    sadtalker_mats: tuple[Path, Path], tmp_path: Path
) -> None:
    driving_path, source_path = sadtalker_mats
    track = read_coeff_mat(driving_path, source_mat=source_path)
    assert track.layout == "compact70" and track.coeffs.shape == (NUM_FRAMES, 70) and track.coeffs.dtype == np.float32
    source = scipy.io.loadmat(str(source_path))["coeff_3dmm"]
    np.testing.assert_array_equal(track.reference, source[0, :70])

    intents = np.where(np.arange(NUM_FRAMES) < NUM_FRAMES // 2, 0.0, 1.0)  # pause, then emphasis
    governed, gains = govern(track, _timing(intents), GovernorConfig())
    out_path = write_coeff_mat(governed, tmp_path / "governed" / "portrait##speech.mat")

    # What SadTalker's renderer does with the files: loadmat, [:, :70], and for 'full' the source's [:1, :73].
    written = scipy.io.loadmat(str(out_path))
    assert sorted(k for k in written if not k.startswith("__")) == ["coeff_3dmm"]
    generated = written["coeff_3dmm"]
    assert generated.shape == (NUM_FRAMES, 70) and generated.dtype == np.float32
    full = np.concatenate([generated[:, :70], np.repeat(source[:1, 70:73], NUM_FRAMES, axis=0)], axis=1)
    assert full.shape == (NUM_FRAMES, 73)

    # Motion around the portrait's own pose is 70 % in the pause half and untouched at full emphasis.
    original = scipy.io.loadmat(str(driving_path))["coeff_3dmm"]
    rest = source[0, :70]
    np.testing.assert_allclose(generated[:5] - rest, 0.7 * (original[:5] - rest), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(generated[-5:], original[-5:], rtol=1e-5, atol=1e-6)
    assert gains.shape == (NUM_FRAMES,)


def test_73_dim_file_keeps_its_crop_parameters(sadtalker_mats: tuple[Path, Path], tmp_path: Path) -> None:
    _, source_path = sadtalker_mats
    base = scipy.io.loadmat(str(source_path))["coeff_3dmm"]
    track73 = np.repeat(base, NUM_FRAMES, axis=0)
    track73[:, :64] += np.linspace(0, 1, NUM_FRAMES, dtype=np.float32)[:, None]
    path = tmp_path / "with_crop.mat"
    scipy.io.savemat(str(path), {"coeff_3dmm": track73})
    track = read_coeff_mat(path, source_mat=source_path)
    assert track.layout == "compact73"
    governed, _ = govern(track, _timing(np.zeros(NUM_FRAMES)), GovernorConfig())
    written = scipy.io.loadmat(str(write_coeff_mat(governed, tmp_path / "out.mat")))["coeff_3dmm"]
    assert written.shape == (NUM_FRAMES, 73) and written.dtype == np.float32
    np.testing.assert_array_equal(written[:, 70:73], track73[:, 70:73])
    assert not np.allclose(written[:, :64], track73[:, :64])


def test_wrong_files_give_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"not a mat file at all")
    with pytest.raises(InputError, match="not a MATLAB .mat file|coeff_3dmm"):
        read_coeff_mat(bad)
    other = tmp_path / "other.mat"
    scipy.io.savemat(str(other), {"something": np.zeros((3, 70), np.float32)})
    with pytest.raises(InputError, match="no 'coeff_3dmm' array"):
        read_coeff_mat(other)
    wide = tmp_path / "wide.mat"
    scipy.io.savemat(str(wide), {"coeff_3dmm": np.zeros((3, 64), np.float32)})
    with pytest.raises(InputError, match=r"\(3, 64\)"):
        read_coeff_mat(wide)


def test_missing_checkout_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERSONA_VIDEO_SADTALKER_DIR", raising=False)
    with pytest.raises(BackendUnavailable, match="PERSONA_VIDEO_SADTALKER_DIR"):
        SadTalkerRunner(None, tmp_path)
    with pytest.raises(BackendUnavailable, match="is not a SadTalker checkout"):
        SadTalkerRunner(tmp_path, tmp_path)
    checkout = tmp_path / "SadTalker"
    (checkout / "src").mkdir(parents=True)
    (checkout / "inference.py").write_text("")
    (checkout / "src" / "test_audio2coeff.py").write_text("")
    with pytest.raises(BackendUnavailable, match=str(tmp_path / "SadTalker_V0.0.2_256.safetensors")):
        SadTalkerRunner(checkout, tmp_path)


def test_sadtalker_failure_surfaces_its_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real runner starts the real driver in the checkout; a broken checkout is a StageError with its traceback."""
    import sys

    from persona_video.errors import StageError
    from persona_video.weights.sadtalker_runner import SADTALKER_FILES

    monkeypatch.delenv("PERSONA_VIDEO_SADTALKER_PYTHON", raising=False)
    checkout = tmp_path / "SadTalker"
    (checkout / "src").mkdir(parents=True)
    (checkout / "inference.py").write_text("")
    (checkout / "src" / "test_audio2coeff.py").write_text("")
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in SADTALKER_FILES:
        (weights / name).parent.mkdir(parents=True, exist_ok=True)
        (weights / name).write_bytes(b"")
    runner = SadTalkerRunner(checkout, weights, device="cpu", python=Path(sys.executable))
    with pytest.raises(StageError, match="SadTalker coeff exited with 1") as failure:
        runner.audio_to_coeff(tmp_path / "a.wav", tmp_path / "p.png", tmp_path / "out")
    # The driver imported from the checkout's own src package (not from beside itself) and its stderr came back.
    assert "No module named 'src.generate_batch'" in str(failure.value)
    with pytest.raises(InputError, match="preprocess must be 'crop' or 'full'"):
        runner.audio_to_coeff(tmp_path / "a.wav", tmp_path / "p.png", tmp_path / "out", preprocess="resize")
