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

import cv2
import numpy as np

from persona_video.expression import (
    BLINK_LEFT,
    BLINK_RIGHT,
    EXP_STOP,
    MAX_PITCH_RAD,
    MAX_ROLL_RAD,
    MAX_YAW_RAD,
    PITCH,
    ROLL,
    TEETH_SHOW,
    TRANS_X,
    TRANS_Y,
    TRANS_Z,
    YAW,
)
from persona_video.render.face import FaceLandmarks
from persona_video.render.geometry import Framing, frame_portrait, posing_depth, rotation
from persona_video.render.mesh import NUM_FACE_VERTICES, build_mesh, pixel_matrix, signed_areas
from persona_video.render.mouth import MouthRest, paint_mouth
from persona_video.render.shapes import (
    EXPRESSION_CLIP,
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LOWER_INNER_LIP,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
    UPPER_INNER_LIP,
    FaceFrame,
    expression_basis,
)

logger = logging.getLogger(__name__)

#: Fixed-point iterations inverting the forward displacement field: first on a grid twice as
#: coarse as the field's (cheap, gets close), then on the field's own grid (restores the detail).
SEED_ITERATIONS = 2
INVERSE_ITERATIONS = 1
#: The displacement field is computed on a grid this many pixels apart and upsampled.
FIELD_STEP = 4
MAX_TRANS_XY_FACE_H = 0.08
MAX_SCALE_CHANGE = 0.08
#: A blink coefficient at or above this shuts the eye fully (lower values close it in proportion).
BLINK_SHUT_AT = 0.6
_BLINKS = [BLINK_LEFT, BLINK_RIGHT]
#: Rows above and below the inner lips that get the exact inverse when the lips close, pixels.
_SEAM_MARGIN_PX = 3
#: Landmarks around the mouth whose pose-only motion defines the skull's (upper teeth) motion.
_MOUTH_REFERENCE = list(UPPER_INNER_LIP + LOWER_INNER_LIP + (1, 2, 164, 152, 17, 0))
_POSE_LIMITS = np.array([MAX_YAW_RAD, MAX_PITCH_RAD, MAX_ROLL_RAD])


def _fixed_point(field: np.ndarray, grid: np.ndarray, inverse: np.ndarray, iterations: int) -> np.ndarray:
    """``iterations`` steps of inverse(x) = field(x - inverse(x)) on one grid: field, grid (the
    grid's own coordinates) and inverse are (h, w, 2) float32 in that grid's units."""
    for _ in range(iterations):
        inverse = cv2.remap(
            field, cv2.subtract(grid, inverse), None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
    return inverse


class PortraitAnimator:
    """Animates one portrait from compact-70/73 coefficients (see ``persona_video.types``).

    portrait: (H, W, 3) uint8 RGB; landmarks: its face mesh (``render.face.detect_face``).
    framing: "crop" (square head-and-shoulders, ``out_size`` pixels) or "full"
    (the whole portrait, dimensions rounded down to even).
    """

    def __init__(
        self, portrait: np.ndarray, landmarks: FaceLandmarks, framing: Framing = "crop", out_size: int = 512
    ) -> None:
        self.framing = framing
        self.image, points, depth = frame_portrait(portrait, landmarks, framing, out_size)
        self.height, self.width = self.image.shape[:2]
        self.rest_points = points.astype(np.float32)  # (478, 2) pixel centres, as framed
        self.face = FaceFrame.from_points(points)
        self.mesh = build_mesh(points, depth, self.face)
        self.rest_vertices = self.mesh.vertices.astype(np.float64)
        self.basis = expression_basis(
            self.mesh.vertices, self.face, self.mesh.is_neck, fixed=self.mesh.pose_weight == 0.0
        ).astype(np.float64)
        self.rest_areas = signed_areas(self.rest_vertices, self.mesh.triangles)
        face_h = self.face.face_h
        self.pivot = np.array([*(self.face.centre + 0.2 * face_h * self.face.down), 0.0])
        face_uv = self.face.to_face(points[:NUM_FACE_VERTICES])
        self.mesh.depth[:NUM_FACE_VERTICES] = posing_depth(face_uv, depth[:NUM_FACE_VERTICES], face_h)
        self.mesh.depth[NUM_FACE_VERTICES:] = -0.15 * face_h
        self.mouth_rest = MouthRest.from_points(points, self.face.down, face_h, self.image)
        lo = np.floor(self.rest_vertices.min(axis=0)).astype(int)
        hi = np.ceil(self.rest_vertices.max(axis=0)).astype(int) + 1
        x0, y0 = max(lo[0], 0), max(lo[1], 0)
        x1, y1 = min(hi[0], self.width), min(hi[1], self.height)
        self.box = (x0, y0, x1, y1)
        # the field's grid: one point per FIELD_STEP pixels, an even number each way (the seed grid
        # halves it), covering the box and up to 2 * FIELD_STEP - 1 pixels past its far edges,
        # which are cut off again after upsampling
        coarse_w = 2 * -(-(x1 - x0) // (2 * FIELD_STEP))
        coarse_h = 2 * -(-(y1 - y0) // (2 * FIELD_STEP))
        grid_x1, grid_y1 = x0 + coarse_w * FIELD_STEP, y0 + coarse_h * FIELD_STEP
        self.matrix = pixel_matrix(self.mesh, (x0, y0, grid_x1, grid_y1), step=FIELD_STEP)
        grid_y, grid_x = np.mgrid[0:coarse_h, 0:coarse_w].astype(np.float32)
        self.coarse_grid = np.dstack([grid_x, grid_y])
        grid_y, grid_x = np.mgrid[0 : coarse_h // 2, 0 : coarse_w // 2].astype(np.float32)
        self.seed_grid = np.dstack([grid_x, grid_y])
        # the coarse grid in frame pixels: upsampling it is the identity inside the grid, off by
        # less than a pixel on its outer rows and columns (the resize clamps), which border_fix undoes
        coarse_origin = np.array([x0, y0], dtype=np.float32) + (FIELD_STEP - 1) / 2.0
        self.coarse_pixels = (self.coarse_grid * FIELD_STEP + coarse_origin).astype(np.float32)
        grid_y, grid_x = np.mgrid[y0:grid_y1, x0:grid_x1].astype(np.float32)
        fine_grid = np.dstack([grid_x, grid_y])
        upsampled = cv2.resize(self.coarse_pixels, (grid_x1 - x0, grid_y1 - y0), interpolation=cv2.INTER_LINEAR)
        # (h, w, 2) over the grid, zero but for the outer FIELD_STEP // 2 rows/columns
        self.border_fix = upsampled - fine_grid
        self.eye_triangles = self._eye_triangles()
        on_lips = np.zeros(len(self.rest_vertices), dtype=bool)
        on_lips[list(UPPER_INNER_LIP + LOWER_INNER_LIP)] = True
        self.lip_triangles = np.flatnonzero(on_lips[self.mesh.triangles].any(axis=1))
        self.iris_weights = self._iris_weights(points)
        reference = self.rest_vertices[_MOUTH_REFERENCE]
        self._skull_fit = np.linalg.pinv(np.column_stack([reference, np.ones(len(reference))]))  # (3, N)
        logger.info(
            "animator ready: %dx%d frame, %d vertices, %d triangles, %d animated pixels",
            self.width,
            self.height,
            len(self.rest_vertices),
            len(self.mesh.triangles),
            self.matrix.nnz // 3,
        )

    def _eye_triangles(self) -> tuple[np.ndarray, np.ndarray]:
        """Triangles a blink moves (right eye, left eye): their pixels get an exact inverse."""
        out = []
        for chains in ((RIGHT_EYE_UPPER, RIGHT_EYE_LOWER), (LEFT_EYE_UPPER, LEFT_EYE_LOWER)):
            on_lid = np.zeros(len(self.rest_vertices), dtype=bool)
            on_lid[list(chains[0] + chains[1])] = True
            out.append(np.flatnonzero(on_lid[self.mesh.triangles].any(axis=1)))
        return out[0], out[1]

    def _exact_inverse(
        self, placed: np.ndarray, triangle_ids: np.ndarray, lookup: np.ndarray, pixels: np.ndarray | None = None
    ) -> None:
        """Overwrite ``lookup`` (box-sized (h, w, 2) source coordinates) with the exact
        piecewise-affine inverse inside the given triangles at ``placed`` (V, 2), for all
        pixels of the triangles' bounding box or only ``pixels`` ((P, 2) x, y inside the box).

        A closing lid squeezes the eye into a line, pressed lips squeeze the teeth between
        them: there the half-resolution fixed-point inverse cannot follow and the iris or
        the teeth would show through.
        """
        x0, y0, x1, y1 = self.box
        tris = self.mesh.triangles[triangle_ids]
        dest, src = placed[tris], self.rest_vertices[tris]  # (K, 3, 2)
        if pixels is None:
            lo = np.maximum(np.floor(dest.reshape(-1, 2).min(axis=0)).astype(int), (x0, y0))
            hi = np.minimum(np.ceil(dest.reshape(-1, 2).max(axis=0)).astype(int) + 1, (x1, y1))
            if (hi <= lo).any():
                return
            yy, xx = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]]
            pixels = np.stack([xx.ravel(), yy.ravel()], axis=1)
        pixels = pixels.astype(np.float64)  # (P, 2)
        a, b, c = dest[:, 0], dest[:, 1], dest[:, 2]
        det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        usable = np.abs(det) > 1e-6
        det = np.where(usable, det, 1.0)
        px = pixels[:, None, 0] - a[None, :, 0]
        py = pixels[:, None, 1] - a[None, :, 1]
        wb = (px * (c[:, 1] - a[:, 1]) - py * (c[:, 0] - a[:, 0])) / det
        wc = (py * (b[:, 0] - a[:, 0]) - px * (b[:, 1] - a[:, 1])) / det
        wa = 1.0 - wb - wc
        inside = (wa >= -1e-6) & (wb >= -1e-6) & (wc >= -1e-6) & usable
        hit = inside.any(axis=1)
        if not hit.any():
            return
        k = np.argmax(inside[hit], axis=1)
        rows = np.flatnonzero(hit)
        source = wa[rows, k, None] * src[k, 0] + wb[rows, k, None] * src[k, 1] + wc[rows, k, None] * src[k, 2]
        lookup[pixels[rows, 1].astype(int) - y0, pixels[rows, 0].astype(int) - x0] = source.astype(np.float32)

    def _lip_seam_pixels(self, placed: np.ndarray) -> np.ndarray | None:
        """(P, 2) int pixels in a band around the inner lips where they close beyond the
        portrait's own opening, or None when they do not."""
        upper, lower = placed[list(UPPER_INNER_LIP)], placed[list(LOWER_INNER_LIP)]
        rest_gap = self.rest_vertices[list(LOWER_INNER_LIP), 1] - self.rest_vertices[list(UPPER_INNER_LIP), 1]
        if not np.any(rest_gap - (lower[:, 1] - upper[:, 1]) > 1.0):
            return None
        x0, y0, x1, y1 = self.box
        columns = np.arange(max(int(np.floor(upper[:, 0].min())), x0), min(int(np.ceil(upper[:, 0].max())) + 1, x1))
        order_u, order_l = np.argsort(upper[:, 0]), np.argsort(lower[:, 0])
        top = np.floor(np.interp(columns, upper[order_u, 0], upper[order_u, 1])).astype(int) - _SEAM_MARGIN_PX
        bottom = np.ceil(np.interp(columns, lower[order_l, 0], lower[order_l, 1])).astype(int) + _SEAM_MARGIN_PX
        rows = np.arange(int((bottom - top).max()) + 1)
        ys = top[None, :] + rows[:, None]
        keep = (ys <= bottom[None, :]) & (ys >= y0) & (ys < y1)
        xs = np.broadcast_to(columns[None, :], ys.shape)
        return np.stack([xs[keep], ys[keep]], axis=1)

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
        out[:EXP_STOP] = np.clip(out[:EXP_STOP], EXPRESSION_CLIP[:, 0], EXPRESSION_CLIP[:, 1])
        out[YAW : ROLL + 1] = np.clip(out[YAW : ROLL + 1], -_POSE_LIMITS, _POSE_LIMITS)
        out[TRANS_X : TRANS_Y + 1] = np.clip(out[TRANS_X : TRANS_Y + 1], -MAX_TRANS_XY_FACE_H, MAX_TRANS_XY_FACE_H)
        out[TRANS_Z] = np.clip(out[TRANS_Z], -MAX_SCALE_CHANGE, MAX_SCALE_CHANGE)
        return out

    def place_vertices(self, coeffs: np.ndarray) -> np.ndarray:
        """(70,) clipped coefficients -> (V, 2) vertex positions, without the fold guard."""
        expression = coeffs[:10].copy()
        # a blink is all or nothing: one gated down (the governor's pause gain) still shuts the eye
        expression[_BLINKS] = np.minimum(expression[_BLINKS] / BLINK_SHUT_AT, 1.0)
        moved = self.rest_vertices + np.tensordot(expression, self.basis, axes=1)
        return self._pose(moved, coeffs)

    def _pose(self, moved: np.ndarray, coeffs: np.ndarray, index: slice | list[int] = slice(None)) -> np.ndarray:
        """Turn, scale and shift ``moved`` (N, 2), the vertices ``index`` after the expression,
        by the head pose of ``coeffs``, each vertex as far as its pose weight says."""
        turn = rotation(coeffs[YAW], coeffs[PITCH], coeffs[ROLL])
        rel = np.column_stack([moved - self.pivot[:2], self.mesh.depth[index] - self.pivot[2]])
        turned = rel @ turn.T
        scale = 1.0 + coeffs[TRANS_Z]
        shift = np.array([coeffs[TRANS_X], coeffs[TRANS_Y]]) * self.face.face_h
        posed = self.pivot[:2] + turned[:, :2] * scale + shift
        return moved + self.mesh.pose_weight[index, None] * (posed - moved)

    def vertex_positions(self, coeffs: np.ndarray) -> np.ndarray:
        """(V, 2) vertex positions for one frame, strength reduced if a triangle would fold."""
        return self._unfolded(self.clip_coeffs(coeffs))

    def _unfolded(self, clipped: np.ndarray) -> np.ndarray:
        for strength in (1.0, 0.8, 0.6, 0.4, 0.2, 0.0):
            placed = self.place_vertices(clipped * strength)
            if not self.folded_triangles(placed).any():
                if strength < 1.0:
                    logger.debug("coefficients scaled to %.1f to avoid a folded triangle", strength)
                return placed
        return self.rest_vertices.copy()

    def folded_triangles(self, placed: np.ndarray) -> np.ndarray:
        """(F,) bool: triangles turned over (or, for face triangles, squashed below 2 %) at ``placed`` (V, 2)."""
        areas = signed_areas(placed, self.mesh.triangles)
        holes, slivers = self.mesh.hole_triangle_mask, self.mesh.sliver_mask
        # a closed lid or lip strip may end a hair's width inside out under a turn: invisible
        squashed = (areas <= 0.02 * self.rest_areas) & ~slivers
        return np.where(holes, areas < -np.maximum(2.0, 0.1 * self.rest_areas), squashed)

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
        if not np.any(clipped):
            return self.image.copy()
        x0, y0, x1, y1 = self.box
        # the box is drawn below; only the strips around it are the portrait's own
        frame = np.empty_like(self.image)
        frame[:y0], frame[y1:] = self.image[:y0], self.image[y1:]
        frame[y0:y1, :x0], frame[y0:y1, x1:] = self.image[y0:y1, :x0], self.image[y0:y1, x1:]
        placed = self._unfolded(clipped)
        displacement = (placed - self.rest_vertices).astype(np.float32)
        coarse_h, coarse_w = self.coarse_grid.shape[:2]
        # forward field on the half-resolution grid, in half-resolution units
        field = (self.matrix @ displacement).reshape(coarse_h, coarse_w, 2) * (1.0 / FIELD_STEP)
        lookup = self._inverse_lookup(field)
        for eye, blink in ((0, clipped[BLINK_RIGHT]), (1, clipped[BLINK_LEFT])):
            if blink > 0.05:
                self._exact_inverse(placed, self.eye_triangles[eye], lookup)
        seam = self._lip_seam_pixels(placed)
        if seam is not None:
            self._exact_inverse(placed, self.lip_triangles, lookup, seam)
        cv2.remap(
            self.image, lookup, None, cv2.INTER_LINEAR, dst=frame[y0:y1, x0:x1], borderMode=cv2.BORDER_REFLECT_101
        )
        paint_mouth(frame, self.image, placed, self.skull_affine(clipped), self.mouth_rest, float(clipped[TEETH_SHOW]))
        return frame

    def _inverse_lookup(self, field: np.ndarray) -> np.ndarray:
        """Forward field (h, w, 2) in coarse-grid units -> box-sized (H, W, 2) float32 source pixels.

        Fixed-point inversion, inverse(x) = field(x - inverse(x)): seeded on a half-resolution copy
        of the field, then refined on the field's own grid, then upsampled to the box.
        """
        coarse_h, coarse_w = field.shape[:2]
        seed_h, seed_w = self.seed_grid.shape[:2]
        half = cv2.resize(field, (seed_w, seed_h), interpolation=cv2.INTER_AREA)
        half *= seed_w / coarse_w
        inverse = _fixed_point(half, self.seed_grid, half, SEED_ITERATIONS)
        inverse = cv2.resize(inverse, (coarse_w, coarse_h), interpolation=cv2.INTER_LINEAR)
        inverse *= coarse_w / seed_w
        inverse = _fixed_point(field, self.coarse_grid, inverse, INVERSE_ITERATIONS)
        source = cv2.scaleAdd(inverse, -float(FIELD_STEP), self.coarse_pixels)  # frame pixels
        grid_h, grid_w = self.border_fix.shape[:2]
        lookup = cv2.resize(source, (grid_w, grid_h), interpolation=cv2.INTER_LINEAR)
        edge = FIELD_STEP // 2
        if edge:
            inner = slice(edge, grid_h - edge)  # the corners belong to the row strips only
            for rows, cols in (
                (slice(0, edge), slice(None)),
                (slice(grid_h - edge, grid_h), slice(None)),
                (inner, slice(0, edge)),
                (inner, slice(grid_w - edge, grid_w)),
            ):
                lookup[rows, cols] -= self.border_fix[rows, cols]
        x0, y0, x1, y1 = self.box
        return lookup[: y1 - y0, : x1 - x0]

    def skull_affine(self, coeffs: np.ndarray) -> np.ndarray:
        """(2, 3) affine map from rest pixels to the frame for points fixed to the skull (the upper
        teeth): the head pose of (70,) clipped ``coeffs`` without the expression, fitted around the mouth."""
        posed = self._pose(self.rest_vertices[_MOUTH_REFERENCE], coeffs, _MOUTH_REFERENCE)
        return (self._skull_fit @ posed).T  # the least-squares fit; its design is the rest points

    def render(self, coeffs: np.ndarray) -> Iterator[np.ndarray]:
        """Frames for a (T, 70) or (T, 73) coefficient track, one (H, W, 3) uint8 array at a time."""
        coeffs = np.asarray(coeffs)
        if coeffs.ndim != 2:
            raise ValueError(f"expected a (T, 70) or (T, 73) coefficient array, got shape {coeffs.shape}")
        for row in coeffs:
            yield self.render_frame(row)
