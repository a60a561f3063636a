"""Where the animator's frame comes from and how the head turns in depth.

``frame_portrait`` cuts the frame the video shows (a square head-and-shoulders crop, or the
whole portrait). ``rotation`` and ``posing_depth`` give the head pose its third dimension: a
rotation in image axes and a depth per face point that a turn can use without folding the mesh.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from persona_video.render.face import FaceLandmarks

Framing = Literal["crop", "full"]
#: In "crop" framing the square frame is this many face heights (forehead to chin) tall.
CROP_FACE_HEIGHTS = 2.0
#: ... and its centre sits this many face heights below the face centre (shows the shoulders).
CROP_CENTRE_DROP = 0.12
#: Share of the face mesh's depth detail (nose, brows) kept when posing, 0..1.
DEPTH_DETAIL = 0.3
RELIEF_BLUR_FACE_H = 0.05
#: Distance from the face's front to the head's turning axis, face heights.
SKULL_DEPTH_FACE_H = 0.5


def frame_portrait(
    portrait: np.ndarray, landmarks: FaceLandmarks, framing: Framing, out_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut the frame the video shows.

    Returns (image (H, W, 3) uint8, points (478, 2) and depth (478,) in the
    frame's pixel-centre coordinates).
    """
    points = landmarks.points_px.astype(np.float64) - 0.5  # MediaPipe x*W -> pixel centres
    depth = landmarks.depth_px.astype(np.float64)
    if framing == "full":
        height, width = portrait.shape[:2]
        image = np.ascontiguousarray(portrait[: height - height % 2, : width - width % 2, :3])
        return image, points, depth
    if framing != "crop":
        raise ValueError(f"framing must be 'crop' or 'full', not {framing!r}")
    face_h = landmarks.face_height_px
    down = landmarks.points_px[152] - landmarks.points_px[10]
    centre = points[:468].mean(axis=0) + CROP_CENTRE_DROP * face_h * down / np.linalg.norm(down)
    side = CROP_FACE_HEIGHTS * face_h
    scale = out_size / side
    source = portrait[..., :3]
    if scale < 0.75:  # shrink first with area averaging so the crop does not alias
        source = cv2.resize(source, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        points = (points + 0.5) * (source.shape[1] / portrait.shape[1]) - 0.5
        centre = (centre + 0.5) * (source.shape[1] / portrait.shape[1]) - 0.5
        depth = depth * (source.shape[1] / portrait.shape[1])
        scale = out_size / (side * source.shape[1] / portrait.shape[1])
    # pixel-centre mapping: out = scale * (in - centre) + (out_size - 1) / 2
    shift = (out_size - 1) / 2.0 - scale * centre
    matrix = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]])
    image = cv2.warpAffine(
        source, matrix, (out_size, out_size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
    )
    return image, points * scale + shift, depth * scale


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation for image axes (x right, y down, z into the screen... MediaPipe z: towards camera < 0)."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    r_yaw = np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])
    r_pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return r_roll @ r_pitch @ r_yaw


def posing_depth(uv: np.ndarray, depth: np.ndarray, face_h: float, detail: float = DEPTH_DETAIL) -> np.ndarray:
    """(N,) depth in pixels used for posing, relative to the rotation pivot.

    A wide ellipsoid (the skull) plus ``detail`` of the face mesh's own relief
    (nose, brows) around a quadratic fit. The true depth is steep at the
    silhouette and under the nose, where a rigid turn would fold the 2-D mesh
    (those parts really hide themselves); the ellipsoid keeps every point in
    front of the silhouette for the supported angles.
    uv: (N, 2) face coordinates (face heights); depth: (N,) MediaPipe z, pixels; face_h: pixels.
    """
    u, v = uv[:, 0], uv[:, 1]
    half_w = max(float(np.abs(u).max()), 0.2)
    shell = np.clip(1.0 - (u / (1.5 * half_w)) ** 2 - (v / 0.8) ** 2, 0.05, 1.0)
    design = np.column_stack([np.ones_like(u), u, v, u * u, v * v, u * v])
    coef, *_ = np.linalg.lstsq(design, depth, rcond=None)
    relief = depth - design @ coef
    # smoothed, so the nose bulges as a whole without the steep underside that would fold
    dist2 = np.sum((uv[:, None, :] - uv[None, :, :]) ** 2, axis=2)
    blur = np.exp(-dist2 / (2.0 * RELIEF_BLUR_FACE_H**2))
    relief = (blur @ relief) / blur.sum(axis=1)
    centre_weight = np.exp(-((u / 0.16) ** 2) - ((v / 0.3) ** 2))  # relief only where the face is frontal
    return -SKULL_DEPTH_FACE_H * face_h * np.sqrt(shell) + detail * centre_weight * relief
