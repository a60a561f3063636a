"""The embedded renderer: a piecewise-affine mesh warp of the portrait.

Set-up (once per portrait): frame the portrait, build the mesh and the
expression fields, and precompute each animated pixel's triangle and
barycentric weights as a sparse (pixels x vertices) matrix. Per frame: vertex
displacements from the coefficients, one sparse product for the dense
displacement field, a fixed-point inversion of that field (two look-ups) and
one ``cv2.remap`` of the head's box; pixels outside the anchor ring are the
portrait's own. The mouth interior is drawn where the lips part.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import cv2
import numpy as np

from persona_video import expression as ex
from persona_video.render.face import FaceLandmarks
from persona_video.render.mesh import NUM_FACE_VERTICES, build_mesh, pixel_matrix, signed_areas
from persona_video.render.mouth import inner_gap_px, paint_mouth_interior
from persona_video.render.shapes import EXPRESSION_CLIP, FaceFrame, expression_basis

logger = logging.getLogger(__name__)

Framing = Literal["crop", "full"]
#: In "crop" framing the square frame is this many face heights (forehead to chin) tall.
CROP_FACE_HEIGHTS = 2.0
#: ... and its centre sits this many face heights below the face centre (shows the shoulders).
CROP_CENTRE_DROP = 0.12
#: Fixed-point iterations inverting the forward displacement field.
INVERSE_ITERATIONS = 2
MAX_TRANS_XY_FACE_H = 0.08
MAX_SCALE_CHANGE = 0.08
_POSE_LIMITS = np.array([ex.MAX_YAW_RAD, ex.MAX_PITCH_RAD, ex.MAX_ROLL_RAD])


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
    image = cv2.warpAffine(source, matrix, (out_size, out_size), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT_101)
    return image, points * scale + shift, depth * scale


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation for image axes (x right, y down, z into the screen... MediaPipe z: towards camera < 0)."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    r_yaw = np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])
    r_pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return r_roll @ r_pitch @ r_yaw


class PortraitAnimator:
    """Animates one portrait from compact-70/73 coefficients (see ``persona_video.expression``).

    portrait: (H, W, 3) uint8 RGB; landmarks: its face mesh (``render.face.detect_face``).
    framing: "crop" (square head-and-shoulders, ``out_size`` pixels) or "full"
    (the whole portrait, dimensions rounded down to even).
    """

    def __init__(self, portrait: np.ndarray, landmarks: FaceLandmarks, framing: Framing = "crop",
                 out_size: int = 512) -> None:
        self.framing = framing
        self.image, points, depth = frame_portrait(portrait, landmarks, framing, out_size)
        self.height, self.width = self.image.shape[:2]
        self.rest_points = points.astype(np.float32)  # (478, 2) pixel centres, as framed
        self.face = FaceFrame.from_points(points)
        self.mesh = build_mesh(points, depth, self.face)
        self.rest_vertices = self.mesh.vertices.astype(np.float64)
        self.basis = expression_basis(self.mesh.vertices, self.face, self.mesh.is_neck).astype(np.float64)
        self.rest_areas = signed_areas(self.rest_vertices, self.mesh.triangles)
        face_h = self.face.face_h
        self.pivot = np.array([*(self.face.centre + 0.2 * face_h * self.face.down),
                               float(np.mean(depth[:468])) + 0.35 * face_h])
        self.mesh.depth[NUM_FACE_VERTICES:] = self.pivot[2] - 0.15 * face_h
        self.rest_gap_px = inner_gap_px(points, self.face.down)
        lo = np.floor(self.rest_vertices.min(axis=0)).astype(int)
        hi = np.ceil(self.rest_vertices.max(axis=0)).astype(int) + 1
        self.box = (max(lo[0], 0), max(lo[1], 0), min(hi[0], self.width), min(hi[1], self.height))
        x0, y0, x1, y1 = self.box
        self.matrix = pixel_matrix(self.mesh, self.box)
        grid_y, grid_x = np.mgrid[0 : y1 - y0, 0 : x1 - x0].astype(np.float32)
        self.grid_local = np.dstack([grid_x, grid_y])
        self.box_origin = np.array([x0, y0], dtype=np.float32)
        self.iris_weights = self._iris_weights(points)
        logger.info("animator ready: %dx%d frame, %d vertices, %d triangles, %d animated pixels",
                    self.width, self.height, len(self.rest_vertices), len(self.mesh.triangles), self.matrix.nnz // 3)

    def _iris_weights(self, points: np.ndarray) -> np.ndarray:
        """(10, V) iris points follow the mean of their eye's corners (they are not mesh vertices)."""
        weights = np.zeros((10, len(self.rest_vertices)))
        for i in range(10):
            iris = points[468 + i]
            near_right = np.linalg.norm(iris - points[33]) < np.linalg.norm(iris - points[263])
            weights[i, [33, 133] if near_right else [263, 362]] = 0.5
        return weights

    def clip_coeffs(self, coeffs: np.ndarray) -> np.ndarray:
        """(70,) or (73,) -> (70,) float64 within the animator's safe ranges."""
        coeffs = np.asarray(coeffs, dtype=np.float64).reshape(-1)
        if coeffs.shape[0] not in (70, 73):
            raise ValueError(f"expected 70 or 73 coefficients per frame, got {coeffs.shape[0]}")
        out = coeffs[:70].copy()
        out[: ex.EXP_STOP] = np.clip(out[: ex.EXP_STOP], EXPRESSION_CLIP[:, 0], EXPRESSION_CLIP[:, 1])
        out[ex.YAW : ex.ROLL + 1] = np.clip(out[ex.YAW : ex.ROLL + 1], -_POSE_LIMITS, _POSE_LIMITS)
        out[ex.TRANS_X : ex.TRANS_Y + 1] = np.clip(out[ex.TRANS_X : ex.TRANS_Y + 1], -MAX_TRANS_XY_FACE_H,
                                                   MAX_TRANS_XY_FACE_H)
        out[ex.TRANS_Z] = np.clip(out[ex.TRANS_Z], -MAX_SCALE_CHANGE, MAX_SCALE_CHANGE)
        return out

    def _place(self, coeffs: np.ndarray) -> np.ndarray:
        """(70,) clipped coefficients -> (V, 2) vertex positions."""
        moved = self.rest_vertices + np.tensordot(coeffs[:10], self.basis, axes=1)
        rotation = _rotation(coeffs[ex.YAW], coeffs[ex.PITCH], coeffs[ex.ROLL])
        rel = np.column_stack([moved - self.pivot[:2], self.mesh.depth - self.pivot[2]])
        turned = rel @ rotation.T
        scale = 1.0 + coeffs[ex.TRANS_Z]
        shift = np.array([coeffs[ex.TRANS_X], coeffs[ex.TRANS_Y]]) * self.face.face_h
        posed = self.pivot[:2] + turned[:, :2] * scale + shift
        return moved + self.mesh.pose_weight[:, None] * (posed - moved)

    def vertex_positions(self, coeffs: np.ndarray) -> np.ndarray:
        """(V, 2) vertex positions for one frame, strength reduced if a triangle would fold."""
        clipped = self.clip_coeffs(coeffs)
        for strength in (1.0, 0.8, 0.6, 0.4, 0.2, 0.0):
            placed = self._place(clipped * strength)
            areas = signed_areas(placed, self.mesh.triangles)
            ok_faces = areas[~self.mesh.hole_triangle_mask] > 0.02 * self.rest_areas[~self.mesh.hole_triangle_mask]
            if ok_faces.all() and (areas[self.mesh.hole_triangle_mask] > -0.05).all():
                if strength < 1.0:
                    logger.debug("coefficients scaled to %.1f to avoid a folded triangle", strength)
                return placed
        return self.rest_vertices.copy()

    def frame_landmarks(self, coeffs: np.ndarray) -> np.ndarray:
        """(478, 2) float32 landmark positions in the rendered frame (MediaPipe convention: x*W, y*H)."""
        placed = self.vertex_positions(coeffs)
        out = np.empty((478, 2), dtype=np.float32)
        out[:NUM_FACE_VERTICES] = placed[:NUM_FACE_VERTICES]
        iris_shift = self.iris_weights @ (placed - self.rest_vertices)
        out[NUM_FACE_VERTICES:] = self.rest_points[NUM_FACE_VERTICES:] + iris_shift
        return out + 0.5

    def render_frame(self, coeffs: np.ndarray) -> np.ndarray:
        """One frame: coeffs (70,) or (73,) -> (H, W, 3) uint8 RGB."""
        clipped = self.clip_coeffs(coeffs)
        frame = self.image.copy()
        if not np.any(clipped):
            return frame
        placed = self.vertex_positions(clipped)
        displacement = (placed - self.rest_vertices).astype(np.float32)
        x0, y0, x1, y1 = self.box
        field = (self.matrix @ displacement).reshape(y1 - y0, x1 - x0, 2)
        lookup = self.grid_local - field
        for _ in range(INVERSE_ITERATIONS):
            lookup = self.grid_local - cv2.remap(field, lookup, None, cv2.INTER_LINEAR,
                                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        lookup += self.box_origin
        frame[y0:y1, x0:x1] = cv2.remap(self.image, lookup, None, cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT_101)
        gap = inner_gap_px(placed, self.face.down)
        open_alpha = float(np.clip((gap - self.rest_gap_px) / (0.012 * self.face.face_h), 0.0, 1.0))
        paint_mouth_interior(frame, placed, self.face.down, open_alpha, float(clipped[ex.TEETH_SHOW]))
        return frame

    def render(self, coeffs: np.ndarray) -> Iterator[np.ndarray]:
        """Frames for a (T, 70) or (T, 73) coefficient track, one (H, W, 3) uint8 array at a time."""
        coeffs = np.asarray(coeffs)
        if coeffs.ndim != 2:
            raise ValueError(f"expected a (T, 70) or (T, 73) coefficient array, got shape {coeffs.shape}")
        for row in coeffs:
            yield self.render_frame(row)
