"""GFPGAN v1.4 face enhancement through ``spandrel`` (no basicsr).

Per frame: a similarity transform maps five points taken from the MediaPipe
face mesh (both iris centres, nose tip, mouth corners) onto the FFHQ 5-point
template at 512x512; the aligned crop goes through GFPGANv1Clean (inputs and
outputs are RGB in [-1, 1]); the restored crop is warped back with the inverse
transform and blended in through a feathered mask, so pixels away from the
face are returned unchanged. Frames are batched on the GPU.
"""

from __future__ import annotations

import logging
import pickle
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from persona_video.errors import BackendUnavailable, InputError
from persona_video.weights.runtime import missing_packages, resolve_device

logger = logging.getLogger(__name__)

#: Side of GFPGAN's aligned face crop, pixels.
CROP_SIZE = 512
#: FFHQ 5-point template at 512 px: image-left eye, image-right eye, nose tip,
#: image-left mouth corner, image-right mouth corner (x, y in pixels).
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)
#: MediaPipe face mesh (478 points) indices for those five points.
LEFT_IRIS = slice(468, 473)
RIGHT_IRIS = slice(473, 478)
NOSE_TIP = 1
MOUTH_LEFT = 61
MOUTH_RIGHT = 291
#: Feathered mask: margin kept out of the blend and blur width, pixels in crop space.
MASK_MARGIN_PX = 24
MASK_BLUR_PX = 31
#: Frames per network call on CUDA (one at a time on CPU).
CUDA_BATCH = 8

_MODELS: dict[tuple[Path, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(478, 2) face-mesh pixel coordinates -> (5, 2) float32 points in template order."""
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.shape != (478, 2):
        raise InputError(
            f"GFPGAN needs (478, 2) face-mesh landmarks, got shape {landmarks.shape}: use MediaPipe's mesh"
        )
    return np.stack(
        [
            landmarks[LEFT_IRIS].mean(axis=0),
            landmarks[RIGHT_IRIS].mean(axis=0),
            landmarks[NOSE_TIP],
            landmarks[MOUTH_LEFT],
            landmarks[MOUTH_RIGHT],
        ]
    ).astype(np.float32)


def alignment_transform(landmarks: np.ndarray) -> np.ndarray:
    """(2, 3) similarity transform from frame pixels to the 512 px aligned crop."""
    points = five_points(landmarks)
    matrix, _ = cv2.estimateAffinePartial2D(points, FFHQ_TEMPLATE_512, method=cv2.LMEDS)
    if matrix is None:
        raise InputError("face landmarks are degenerate (all points together): GFPGAN cannot align this frame")
    return matrix.astype(np.float32)


def _crop_mask() -> np.ndarray:
    """(512, 512) float32 blend weights: 1 inside, feathered to 0 at the crop's border."""
    mask = np.zeros((CROP_SIZE, CROP_SIZE), dtype=np.float32)
    mask[MASK_MARGIN_PX:-MASK_MARGIN_PX, MASK_MARGIN_PX:-MASK_MARGIN_PX] = 1.0
    return cv2.GaussianBlur(mask, (MASK_BLUR_PX, MASK_BLUR_PX), 0)


def _load(weights_path: Path, device: str) -> Any:
    """Load (once per process) GFPGANv1Clean from a ``params_ema`` checkpoint via spandrel."""
    key = (weights_path.resolve(), device)
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        import torch
        from spandrel import ModelLoader, UnsupportedModelError

        fix = f"delete {weights_path} and run `python -m persona_video fetch gfpgan` (it downloads and verifies it)"
        try:
            descriptor = ModelLoader(torch.device("cpu")).load_from_file(weights_path)
        except UnsupportedModelError as e:
            raise BackendUnavailable(f"{weights_path} holds no GFPGAN network spandrel knows ({e}): {fix}") from e
        except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError, EOFError, OSError) as e:
            raise BackendUnavailable(
                f"{weights_path} is not a readable checkpoint ({type(e).__name__}: {e}): {fix}"
            ) from e
        if descriptor.architecture.id != "GFPGAN":
            raise BackendUnavailable(f"{weights_path} holds a {descriptor.architecture.id} network, not GFPGAN: {fix}")
        model = descriptor.model.to(torch.device(device)).eval()
        logger.info("loaded GFPGAN from %s on %s", weights_path, device)
        _MODELS[key] = model
        return model


class GFPGANEnhancer:
    """Face restoration of rendered frames.

    weights_path: GFPGANv1.4.pth (a dict with ``params_ema``).
    device: "auto" (CUDA when present, else CPU), "cuda" or "cpu".
    """

    name = "gfpgan"

    def __init__(self, weights_path: Path, device: str = "auto") -> None:
        self.weights_path = Path(weights_path)
        if not self.weights_path.is_file():
            raise BackendUnavailable(
                f"GFPGAN weights missing: {self.weights_path}. Run `python -m persona_video fetch gfpgan` "
                "or set PERSONA_VIDEO_CHECKPOINTS to the folder that holds GFPGANv1.4.pth"
            )
        packages = missing_packages(("torch", "spandrel"))
        if packages:
            raise BackendUnavailable(
                f"GFPGAN needs the Python package(s) {', '.join(packages)}: pip install -r requirements-gpu.txt"
            )
        self.device = resolve_device(device)
        self._model = _load(self.weights_path, self.device)
        self._mask = _crop_mask()

    def enhance(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """One frame: uint8 (H, W, 3) RGB and (478, 2) float32 pixel landmarks -> uint8 (H, W, 3)."""
        return self.enhance_batch(frame[None], np.asarray(landmarks)[None])[0]

    def enhance_batch(self, frames: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Frames uint8 (N, H, W, 3) RGB and landmarks (N, 478, 2) -> uint8 (N, H, W, 3).

        A frame whose landmarks are not finite (no face found) comes back unchanged.
        """
        frames = np.asarray(frames)
        landmarks = np.asarray(landmarks, dtype=np.float32)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"GFPGAN needs uint8 frames (N, H, W, 3), got {frames.dtype} {frames.shape}")
        if landmarks.shape != (frames.shape[0], 478, 2):
            raise InputError(f"GFPGAN needs landmarks ({frames.shape[0]}, 478, 2), got {landmarks.shape}")
        out = frames.copy()
        jobs = [i for i in range(len(frames)) if np.isfinite(landmarks[i]).all()]
        batch = CUDA_BATCH if self.device.startswith("cuda") else 1
        for start in range(0, len(jobs), batch):
            indices = jobs[start : start + batch]
            matrices = [alignment_transform(landmarks[i]) for i in indices]
            crops = np.stack(
                [
                    cv2.warpAffine(
                        frames[i], m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
                    )
                    for i, m in zip(indices, matrices, strict=True)
                ]
            )
            restored = self._restore(crops)
            for i, m, face in zip(indices, matrices, restored, strict=True):
                out[i] = self._paste(frames[i], face, m)
        return out

    def _restore(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (B, 512, 512, 3) RGB crops -> uint8 restored crops, through the network in [-1, 1]."""
        import torch

        tensor = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float().contiguous() / 127.5 - 1.0
        with torch.inference_mode():
            result = self._model(tensor, return_rgb=False)[0]
        result = ((result.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return result.permute(0, 2, 3, 1).cpu().numpy()

    def _paste(self, frame: np.ndarray, face: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """Blend the restored 512 px crop back into ``frame`` through the inverse transform."""
        height, width = frame.shape[:2]
        inverse = cv2.invertAffineTransform(matrix)
        face_back = cv2.warpAffine(face, inverse, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
        alpha = cv2.warpAffine(self._mask, inverse, (width, height), flags=cv2.INTER_LINEAR, borderValue=0.0)
        alpha = alpha[..., None]
        blended = alpha * face_back.astype(np.float32) + (1.0 - alpha) * frame.astype(np.float32)
        return np.clip(np.round(blended), 0, 255).astype(np.uint8)
