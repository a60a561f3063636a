"""The animator's triangle mesh and its pixel interpolation matrix.

Vertices: the 468 face-mesh landmarks (iris points left out: the lids slide
over them), a head ring around the face oval (hair, temples, upper neck) and
an anchor ring that never moves. Triangles: MediaPipe's own face tesselation,
strips across its mouth and eye holes, and a Delaunay triangulation of the
band between the face oval and the anchor ring. Pixels outside the anchor
ring are never touched, which keeps the background pixel-identical.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import matplotlib.path
import numpy as np
import scipy.sparse
from scipy.spatial import Delaunay

from persona_video.render.shapes import (
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LOWER_INNER_LIP,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
    UPPER_INNER_LIP,
    FaceFrame,
)

logger = logging.getLogger(__name__)

NUM_FACE_VERTICES = 468
HEAD_RING_SCALE = 1.32
#: Anchor ring radius in face heights from the landmark centre; the checker
#: watches pixels beyond 1.2 face heights, which must stay untouched.
ANCHOR_RADIUS_FACE_H = 1.08
NUM_ANCHORS = 28
FACE_OVAL = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)


def tesselation_triangles() -> np.ndarray:
    """(852, 3) int32 triangles of MediaPipe's face tesselation, rebuilt from its edge list."""
    import mediapipe as mp

    edges = {tuple(sorted(e)) for e in mp.solutions.face_mesh.FACEMESH_TESSELATION}
    neighbours: dict[int, set[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    triangles = {tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]}
    uses = Counter(e for t in triangles for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))
    # An edge list also contains 3-cycles that are not faces: their edges are all shared three ways.
    faces = [t for t in triangles if not all(uses[e] > 2 for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))]
    return np.array(sorted(faces), dtype=np.int32)


def _strip(upper: tuple, lower: tuple) -> list[tuple[int, int, int]]:
    """Triangles across a hole between two chains that share their end points."""
    tris = []
    for i in range(len(upper) - 1):
        if i > 0:
            tris.append((upper[i], lower[i + 1], lower[i]))
        if i < len(upper) - 2:
            tris.append((upper[i], upper[i + 1], lower[i + 1]))
    return tris


@dataclass
class Mesh:
    """vertices: (V, 2) pixels at rest; depth: (V,) pixels (MediaPipe z, rings synthesised);
    pose_weight: (V,) how much each vertex follows the head pose (1 face, 0 anchors);
    is_neck: (V,) bool; triangles: (F, 3) int32, counter-clockwise in image space (positive area);
    hole_triangle_mask: (F,) the mouth/eye strips, which may collapse;
    sliver_mask: (F,) edge-on triangles thinner than SLIVER_HEIGHT_PX."""

    vertices: np.ndarray
    depth: np.ndarray
    pose_weight: np.ndarray
    is_neck: np.ndarray
    triangles: np.ndarray
    hole_triangle_mask: np.ndarray
    sliver_mask: np.ndarray


#: Triangles thinner than this at rest (pixels) hold no pixel centre; the face mesh has a few
#: edge-on ones (nose underside, jaw silhouette) whose flips cannot be seen, so fold checks skip them.
SLIVER_HEIGHT_PX = 0.5


def triangle_heights(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(F,) smallest height of each triangle, pixels (2 * |area| / longest edge)."""
    corners = vertices[triangles]
    edges = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2).max(axis=1)
    return 2.0 * np.abs(signed_areas(vertices, triangles)) / np.maximum(edges, 1e-9)


def signed_areas(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(F,) signed areas in pixels^2 (positive = the mesh's orientation)."""
    a, b, c = vertices[triangles[:, 0]], vertices[triangles[:, 1]], vertices[triangles[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _separate_closed_lids(points: np.ndarray, frame: FaceFrame) -> np.ndarray:
    """Nudge inner-lip / eyelid pairs at least 0.6 px apart so the hole strips have positive area."""
    points = points.copy()
    for upper, lower in (
        (UPPER_INNER_LIP, LOWER_INNER_LIP),
        (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER),
        (LEFT_EYE_UPPER, LEFT_EYE_LOWER),
    ):
        for u, lo in zip(upper[1:-1], lower[1:-1]):
            gap = float((points[lo] - points[u]) @ frame.down)
            if gap < 0.6:
                shift = 0.5 * (0.6 - gap) * frame.down
                points[u] -= shift
                points[lo] += shift
    return points


def build_mesh(points: np.ndarray, depth: np.ndarray, frame: FaceFrame) -> Mesh:
    """Build the mesh from (478, 2) landmark pixels and (478,) depth pixels."""
    face = _separate_closed_lids(points[:NUM_FACE_VERTICES].astype(np.float64), frame)
    face_z = depth[:NUM_FACE_VERTICES].astype(np.float64)
    oval = face[list(FACE_OVAL)]
    centre = frame.centre
    # The head ring: the face oval pushed out (hair, temples, under the chin).
    head = centre + (oval - centre) * HEAD_RING_SCALE
    head_uv = frame.to_face(head)
    chin_v = frame.to_face(face[[152]])[0, 1]
    is_neck_head = head_uv[:, 1] > chin_v - 0.12
    angles = np.linspace(0.0, 2.0 * np.pi, NUM_ANCHORS, endpoint=False)
    radius = ANCHOR_RADIUS_FACE_H * frame.face_h
    anchors = centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    vertices = np.concatenate([face, head, anchors])
    num_head = len(head)
    mean_z = float(face_z[list(FACE_OVAL)].mean())
    depth_all = np.concatenate([face_z, np.full(num_head, mean_z), np.full(NUM_ANCHORS, mean_z)])
    pose_weight = np.concatenate([np.ones(NUM_FACE_VERTICES), np.where(is_neck_head, 0.55, 1.0), np.zeros(NUM_ANCHORS)])
    is_neck = np.concatenate([np.zeros(NUM_FACE_VERTICES, bool), is_neck_head, np.zeros(NUM_ANCHORS, bool)])

    holes = _strip(UPPER_INNER_LIP, LOWER_INNER_LIP) + _strip(RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)
    holes += _strip(LEFT_EYE_UPPER, LEFT_EYE_LOWER)
    outer_ids = np.array(list(FACE_OVAL) + list(range(NUM_FACE_VERTICES, len(vertices))))
    delaunay = Delaunay(vertices[outer_ids])
    outer = outer_ids[delaunay.simplices]
    centroids = vertices[outer].mean(axis=1)
    inside_oval = matplotlib.path.Path(oval).contains_points(centroids)
    triangles = np.concatenate([np.array(holes), tesselation_triangles(), outer[~inside_oval]]).astype(np.int32)
    hole_mask = np.zeros(len(triangles), dtype=bool)
    hole_mask[: len(holes)] = True
    areas = signed_areas(vertices, triangles)
    flip = areas < 0
    triangles[flip] = triangles[flip][:, [0, 2, 1]]
    covered = float(np.abs(areas).sum()) / max(_hull_area(vertices), 1e-6)
    if abs(covered - 1.0) > 0.01:
        logger.warning("animator mesh covers %.3f of its hull (overlap or gap)", covered)
    slivers = triangle_heights(vertices, triangles) < SLIVER_HEIGHT_PX
    return Mesh(vertices, depth_all, pose_weight, is_neck, triangles, hole_mask, slivers & ~hole_mask)


def _hull_area(vertices: np.ndarray) -> float:
    from scipy.spatial import ConvexHull

    return float(ConvexHull(vertices).volume)


def pixel_matrix(mesh: Mesh, box: tuple[int, int, int, int], step: int = 1) -> scipy.sparse.csr_matrix:
    """Barycentric interpolation matrix for a grid over ``box`` = (x0, y0, x1, y1), pixels.

    The grid has one point per ``step`` x ``step`` block of pixels, at the block's
    centre (x0 + (step - 1) / 2 + step * j). Returns a (rows * cols, V) float32 CSR
    matrix: row ``i * cols + j`` holds the three barycentric weights of grid point
    (i, j) in its rest triangle (empty outside the mesh).
    """
    x0, y0, x1, y1 = box
    cols, rows = -(-(x1 - x0) // step), -(-(y1 - y0) // step)
    offset = np.array([x0, y0], dtype=np.float64) + (step - 1) / 2.0
    owner = np.full(rows * cols, -1, dtype=np.int64)
    weights = np.zeros((rows * cols, 3), dtype=np.float64)
    verts = mesh.vertices
    for t, (ia, ib, ic) in enumerate(mesh.triangles):
        a, b, c = verts[ia], verts[ib], verts[ic]
        lo = np.ceil((np.minimum(np.minimum(a, b), c) - offset) / step).astype(int)
        hi = np.floor((np.maximum(np.maximum(a, b), c) - offset) / step).astype(int)
        j0, i0 = max(lo[0], 0), max(lo[1], 0)
        j1, i1 = min(hi[0] + 1, cols), min(hi[1] + 1, rows)
        if j0 >= j1 or i0 >= i1:
            continue
        det = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if abs(det) < 1e-9:
            continue
        ii, jj = np.mgrid[i0:i1, j0:j1]
        ii, jj = ii.ravel(), jj.ravel()
        px = offset[0] + step * jj - a[0]
        py = offset[1] + step * ii - a[1]
        wb = (px * (c[1] - a[1]) - py * (c[0] - a[0])) / det
        wc = (py * (b[0] - a[0]) - px * (b[1] - a[1])) / det
        wa = 1.0 - wb - wc
        inside = (wa >= -1e-7) & (wb >= -1e-7) & (wc >= -1e-7)
        index = ii * cols + jj
        take = inside & (owner[index] < 0)
        owner[index[take]] = t
        weights[index[take]] = np.stack([wa[take], wb[take], wc[take]], axis=1)
    covered = np.flatnonzero(owner >= 0)
    tri_cols = mesh.triangles[owner[covered]]
    return scipy.sparse.csr_matrix(
        (weights[covered].ravel().astype(np.float32), (np.repeat(covered, 3), tri_cols.ravel())),
        shape=(rows * cols, len(verts)),
    )
