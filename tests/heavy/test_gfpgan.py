"""GFPGAN through spandrel, on a random-weight GFPGANv1Clean saved in the release
layout ({'params_ema': state_dict}), one real portrait with real face-mesh landmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")

from persona_video.enhance.gfpgan import GFPGANEnhancer, five_points  # noqa: E402
from persona_video.errors import BackendUnavailable, InputError  # noqa: E402


@pytest.fixture(scope="module")
def portrait() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's astronaut (public domain) and its 478 face-mesh landmarks in pixels."""
    import mediapipe as mp
    import skimage.data

    image = np.ascontiguousarray(skimage.data.astronaut())
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as mesh:
        result = mesh.process(image)
    assert result.multi_face_landmarks, "face mesh found no face in the astronaut portrait"
    height, width = image.shape[:2]
    landmarks = np.array([[p.x * width, p.y * height] for p in result.multi_face_landmarks[0].landmark], np.float32)
    return image, landmarks


def test_enhance_changes_only_the_face(random_gfpgan: Path, portrait: tuple[np.ndarray, np.ndarray]) -> None:
    image, landmarks = portrait
    points = five_points(landmarks)
    assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # image-left before image-right
    enhancer = GFPGANEnhancer(random_gfpgan, device="cpu")
    out = enhancer.enhance(image, landmarks)
    assert out.shape == image.shape and out.dtype == np.uint8
    changed = np.abs(out.astype(np.int16) - image).sum(axis=-1) > 0
    face_centre = landmarks.mean(axis=0)
    face_size = float(np.ptp(landmarks, axis=0).max())
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    far = np.hypot(xs - face_centre[0], ys - face_centre[1]) > 1.6 * face_size
    assert far.sum() > 0.5 * far.size
    assert not changed[far].any(), "pixels far from the face were modified"
    near = np.hypot(xs - face_centre[0], ys - face_centre[1]) < 0.3 * face_size
    assert changed[near].mean() > 0.9, "the face itself was not enhanced"


def test_frames_without_a_face_pass_through(random_gfpgan: Path, portrait: tuple[np.ndarray, np.ndarray]) -> None:
    image, _ = portrait
    enhancer = GFPGANEnhancer(random_gfpgan, device="cpu")
    no_face = np.full((1, 478, 2), np.nan, np.float32)
    np.testing.assert_array_equal(enhancer.enhance_batch(image[None], no_face)[0], image)
    with pytest.raises(InputError, match="478, 2"):
        enhancer.enhance_batch(image[None], np.zeros((1, 68, 2), np.float32))


def test_bad_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "GFPGANv1.4.pth"
    with pytest.raises(BackendUnavailable, match=str(missing)):
        GFPGANEnhancer(missing, device="cpu")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint" * 100)
    with pytest.raises(BackendUnavailable, match="not a readable checkpoint"):
        GFPGANEnhancer(garbage, device="cpu")
    wrong_keys = tmp_path / "wrong.pth"
    torch.save({"params_ema": {"conv.weight": torch.zeros(3, 3, 3, 3)}}, wrong_keys)
    with pytest.raises(BackendUnavailable, match="no GFPGAN network"):
        GFPGANEnhancer(wrong_keys, device="cpu")
