"""Face landmarks of a portrait: MediaPipe face mesh (478 points), run once.

The face-mesh model loads once per process behind a lock; results are cached
per image content, so re-rendering the same portrait never runs it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
from dataclasses import dataclass

import numpy as np

from persona_video.errors import InputError

logger = logging.getLogger(__name__)

NUM_LANDMARKS = 478
FOREHEAD, CHIN = 10, 152
#: A face must be at least this tall (forehead to chin), in pixels and as a share of the image height.
MIN_FACE_HEIGHT_PX = 80.0
MIN_FACE_HEIGHT_SHARE = 0.08

_model_lock = threading.Lock()
_model = None
_cache: dict[str, FaceLandmarks] = {}
_CACHE_SIZE = 16


@dataclass(frozen=True)
class FaceLandmarks:
    """The face mesh of one portrait.

    points_px: (478, 2) float32 x, y in image pixels.
    depth_px: (478,) float32 MediaPipe z scaled to pixels (negative = towards the camera).
    image_size: (width, height) of the image they were found in.
    """

    points_px: np.ndarray
    depth_px: np.ndarray
    image_size: tuple[int, int]

    @property
    def face_height_px(self) -> float:
        """Forehead (10) to chin (152) distance, pixels."""
        return float(np.linalg.norm(self.points_px[FOREHEAD] - self.points_px[CHIN]))

    @property
    def centre_px(self) -> np.ndarray:
        """(2,) mean of all landmarks, pixels."""
        return self.points_px.mean(axis=0)


@contextlib.contextmanager
def _quiet_native_logs():
    """MediaPipe's C++ side (TFLite, absl) writes INFO/WARNING lines straight to
    file descriptor 2 on first use; hide them unless logging is at DEBUG.
    Python exceptions are unaffected."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _face_mesh():
    global _model
    if _model is None:
        import mediapipe as mp

        logger.info("loading MediaPipe face mesh")
        _model = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, refine_landmarks=True, max_num_faces=2, min_detection_confidence=0.5
        )
    return _model


def detect_all_faces(image: np.ndarray) -> list[np.ndarray]:
    """Run the face mesh on (H, W, 3) uint8 RGB; returns one (478, 3) float32 array
    (x, y, z in pixels) per face found, possibly none."""
    height, width = image.shape[:2]
    with _model_lock, _quiet_native_logs():
        result = _face_mesh().process(np.ascontiguousarray(image[..., :3]))
    faces = []
    for face in result.multi_face_landmarks or []:
        faces.append(np.array([[p.x * width, p.y * height, p.z * width] for p in face.landmark], dtype=np.float32))
    return faces


def detect_face(image: np.ndarray, name: str = "the portrait") -> FaceLandmarks:
    """Find the one face in (H, W, 3) uint8 RGB and return its landmarks.

    Raises InputError, with what to upload instead, when there is no face,
    more than one, or the face is too small to animate.
    """
    key = hashlib.blake2b(image.tobytes(), digest_size=16, person=b"facemesh").hexdigest() + str(image.shape)
    if key in _cache:
        return _cache[key]
    faces = detect_all_faces(image)
    if not faces:
        raise InputError(
            f"no face found in {name}: upload a frontal photo with one clearly visible face "
            "(a face that fills only a small part of the picture is missed too: crop closer)"
        )
    if len(faces) > 1:
        raise InputError(
            f"{len(faces)} faces found in {name}: upload a photo with exactly one person, or crop it to one face"
        )
    points = faces[0]
    landmarks = FaceLandmarks(
        points_px=np.ascontiguousarray(points[:, :2]),
        depth_px=np.ascontiguousarray(points[:, 2]),
        image_size=(int(image.shape[1]), int(image.shape[0])),
    )
    face_h = landmarks.face_height_px
    if face_h < MIN_FACE_HEIGHT_PX or face_h < MIN_FACE_HEIGHT_SHARE * image.shape[0]:
        raise InputError(
            f"the face in {name} is too small ({face_h:.0f} px tall in a {image.shape[0]} px image): "
            "upload a closer photo where the face fills a good part of the frame"
        )
    if len(_cache) >= _CACHE_SIZE:
        _cache.pop(next(iter(_cache)))
    _cache[key] = landmarks
    return landmarks
