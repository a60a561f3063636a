"""Expression shapes: per-vertex displacement fields built from the portrait's landmarks.

Each named expression control of ``persona_video.types`` becomes one
(V, 2) displacement field in pixels at strength 1, so a frame's expression
displacement is a (10,) x (10, V, 2) contraction. The fields are made from the
landmark geometry in face-relative units (``face_h`` = forehead-to-chin
distance) with smooth falloffs whose gradients stay below 1, so that no
triangle folds inside the animator's clip ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from persona_video.expression import (
    BLINK_LEFT,
    BLINK_RIGHT,
    BROW_RAISE,
    EXP_STOP,
    JAW_OPEN,
    LIP_FUNNEL,
    LIP_PRESS,
    LIP_ROUND,
    LIP_WIDE,
    SMILE,
    TEETH_SHOW,
)

# MediaPipe face-mesh indices, corner to corner so the lists pair up.
UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_OUTER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_OUTER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
#: Inner-lip polygon, clockwise around the mouth opening.
INNER_LIP_POLYGON = UPPER_INNER_LIP + LOWER_INNER_LIP[-2:0:-1]
MOUTH_CORNERS = (61, 291, 78, 308)
# Eyes, outer corner to inner corner. "left" is the subject's left (image right).
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
FOREHEAD, CHIN, RIGHT_CHEEK_EDGE, LEFT_CHEEK_EDGE = 10, 152, 234, 454

#: In a blink the lids meet this share of the eye opening below the lower lid's rest line:
#: the face mesh often puts the lower lid a little above the iris's lower edge (glasses), and
#: it only reads a blink when no iris is left showing and the closed line sits low (small eyes
#: behind glasses read about 0.6 of open at 0.1, 0.55 at 0.2). The upper lid stops 3 % short.
LOWER_LID_DROP = 0.2
#: Share of the eye opening the upper lid travels on top of the drop (just short of the lower lid).
UPPER_LID_REACH = 0.97
#: How far above the lid (in eye openings) the skin follows a blink.
LID_SKIN_REACH = 3.0

#: Per-control clip range of the expression strengths (lower, upper).
EXPRESSION_CLIP = np.zeros((EXP_STOP, 2), dtype=np.float32)
EXPRESSION_CLIP[:10] = (0.0, 1.2)
EXPRESSION_CLIP[BLINK_LEFT] = EXPRESSION_CLIP[BLINK_RIGHT] = (0.0, 1.0)
EXPRESSION_CLIP[LIP_PRESS] = (0.0, 1.0)


@dataclass(frozen=True)
class FaceFrame:
    """Face-aligned axes: ``right`` and ``down`` unit vectors (2,), ``centre`` (2,) and ``face_h`` pixels."""

    centre: np.ndarray
    right: np.ndarray
    down: np.ndarray
    face_h: float

    @classmethod
    def from_points(cls, points: np.ndarray) -> FaceFrame:
        down = points[CHIN] - points[FOREHEAD]
        face_h = float(np.linalg.norm(down))
        down = down / face_h
        right = np.array([down[1], -down[0]], dtype=np.float64)
        return cls(points[:468].mean(axis=0).astype(np.float64), right, down, face_h)

    def to_face(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) pixels -> (N, 2) (u, v) in face heights, relative to the centre."""
        rel = points - self.centre
        return np.stack([rel @ self.right, rel @ self.down], axis=1) / self.face_h

    def to_pixels(self, uv_disp: np.ndarray) -> np.ndarray:
        """(N, 2) displacements in face heights -> (N, 2) pixels."""
        return (uv_disp[:, :1] * self.right + uv_disp[:, 1:] * self.down) * self.face_h


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _gauss(uv: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-np.sum((uv - centre) ** 2, axis=1) / (2.0 * sigma * sigma))


def expression_basis(
    vertices: np.ndarray, frame: FaceFrame, is_neck: np.ndarray, fixed: np.ndarray | None = None
) -> np.ndarray:
    """Displacement fields of the 10 named controls at strength 1.

    vertices: (V, 2) pixels, the first 468 being face-mesh landmarks.
    is_neck: (V,) bool, ring vertices below the face that follow the jaw half-way.
    fixed: (V,) bool, vertices no control may move (the anchor ring that holds the background).
    Returns (10, V, 2) float32 pixels.
    """
    uv = frame.to_face(vertices)
    num = len(vertices)
    basis = np.zeros((10, num, 2), dtype=np.float64)
    upper_in, lower_in = list(UPPER_INNER_LIP), list(LOWER_INNER_LIP)
    mouth_mid = 0.5 * (uv[upper_in] + uv[lower_in])
    order = np.argsort(mouth_mid[:, 0])
    mouth_line = np.interp(uv[:, 0], mouth_mid[order, 0], mouth_mid[order, 1])
    mouth_centre = mouth_mid[5]
    half_width = 0.5 * abs(uv[308, 0] - uv[78, 0])
    face_half_w = 0.5 * abs(uv[LEFT_CHEEK_EDGE, 0] - uv[RIGHT_CHEEK_EDGE, 0])
    du = np.abs(uv[:, 0] - mouth_centre[0])
    below = uv[:, 1] - mouth_line
    rest_gap = uv[lower_in] - uv[upper_in]

    # jaw_open: lower lip, chin and jaw line drop; the hinge is at the ears.
    jaw_px = 0.11
    # The lower lip moves as one piece; beside the mouth the stretch spreads over the cheek.
    ramp = np.interp(du, [half_width, 1.8 * half_width], [1e-4, 0.2])
    lift = np.interp(du, [half_width, 1.8 * half_width], [0.0, 0.05])
    w_below = _smoothstep((below + lift) / ramp)
    taper = np.clip(1.0 - (du / half_width) ** 2, 0.0, 1.0)  # 0 at the corners: they are the hinge
    lateral = _smoothstep(1.0 - (du - 0.5 * half_width) / max(1.05 * face_half_w - 0.5 * half_width, 1e-3))
    lip_thick = float(uv[17, 1] - uv[14, 1])
    into_chin = _smoothstep((below - lip_thick) / 0.16)
    jaw = w_below * (taper + (lateral - taper) * into_chin)
    jaw[list(UPPER_OUTER_LIP)] = 0.0
    jaw[upper_in] = 0.0
    jaw[lower_in] = taper[lower_in]
    jaw[list(MOUTH_CORNERS)] = 0.0
    jaw[is_neck] = 0.75 * lateral[is_neck] * (below[is_neck] > 0)
    basis[JAW_OPEN, :, 1] = jaw_px * jaw

    corners = [(uv[61] + uv[78]) / 2.0, (uv[291] + uv[308]) / 2.0]
    side = np.sign(uv[:, 0] - mouth_centre[0])
    corner_w = np.maximum(_gauss(uv, corners[0], 0.06), _gauss(uv, corners[1], 0.06))
    # Smooth fields over the upper and lower lip (inner contour 1, fading towards nose and chin).
    across = np.exp(-((du / (0.8 * half_width)) ** 2))
    upper_lip_h = float(uv[13, 1] - uv[0, 1]) + 0.5 * max(float(uv[14, 1] - uv[13, 1]), 0.0)
    lower_lip_h = float(uv[17, 1] - uv[14, 1]) + 0.5 * max(float(uv[14, 1] - uv[13, 1]), 0.0)
    upper_side = across * np.exp(-((np.maximum(-below - upper_lip_h, 0.0) / 0.04) ** 2)) * (below < 0)
    lower_side = across * np.exp(-((np.maximum(below - lower_lip_h, 0.0) / 0.05) ** 2)) * (below > 0)
    upper_side[upper_in], lower_side[upper_in] = across[upper_in], 0.0
    lower_side[lower_in], upper_side[lower_in] = across[lower_in], 0.0
    upper_side[list(MOUTH_CORNERS)] = lower_side[list(MOUTH_CORNERS)] = 0.0
    near_mouth = 1.0

    basis[LIP_WIDE, :, 0] = 0.045 * side * corner_w
    basis[LIP_ROUND, :, 0] = -0.04 * side * corner_w
    basis[LIP_ROUND, :, 1] = near_mouth * (-0.008 * upper_side + 0.012 * lower_side)
    # lip_press: the inner lips meet on the mouth line, closing the portrait's own gap. The lips
    # move as a whole and the skin above and below takes up the stretch over a wide falloff: moving
    # only the inner contour would squash the lips themselves (and keep the warp from inverting).
    gap_order = np.argsort(uv[upper_in, 0])
    half_gap = 0.5 * np.interp(uv[:, 0], uv[upper_in, 0][gap_order], rest_gap[gap_order, 1])
    press_up = np.exp(-((np.maximum(-below - upper_lip_h, 0.0) / 0.07) ** 2)) * (below < 0)
    press_down = np.exp(-((np.maximum(below - lower_lip_h, 0.0) / 0.08) ** 2)) * (below > 0)
    basis[LIP_PRESS, :, 1] = half_gap * (press_up - press_down)
    basis[LIP_PRESS, upper_in] = 0.5 * rest_gap
    basis[LIP_PRESS, lower_in] = -0.5 * rest_gap
    basis[LIP_PRESS, list(MOUTH_CORNERS)] = 0.0
    basis[SMILE, :, 0] = 0.025 * side * corner_w
    basis[SMILE, :, 1] = -0.035 * corner_w
    basis[LIP_FUNNEL, :, 0] = -0.03 * side * corner_w
    basis[LIP_FUNNEL, :, 1] = near_mouth * (-0.012 * upper_side + 0.02 * lower_side)
    basis[TEETH_SHOW, :, 1] = -0.025 * upper_side - 0.005 * lower_side

    brows = uv[list(RIGHT_BROW + LEFT_BROW)]
    brow_dist = np.min(np.linalg.norm(uv[:, None, :] - brows[None], axis=2), axis=1)
    eye_pts = list(set(RIGHT_EYE_UPPER + RIGHT_EYE_LOWER + LEFT_EYE_UPPER + LEFT_EYE_LOWER))
    eye_line = max(uv[eye_pts, 1].min(), -1.0)
    brow_w = np.exp(-(brow_dist**2) / (2 * 0.06**2)) * (uv[:, 1] < eye_line)
    basis[BROW_RAISE, :, 1] = -0.045 * brow_w

    out = np.zeros_like(basis)
    for k in range(10):
        out[k] = frame.to_pixels(basis[k])
    out[BLINK_RIGHT] = _blink_field(vertices, uv, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, frame)
    out[BLINK_LEFT] = _blink_field(vertices, uv, LEFT_EYE_UPPER, LEFT_EYE_LOWER, frame)
    if fixed is not None:
        out[:, fixed] = 0.0  # the jaw's wide falloff would otherwise drag the anchors under the chin
    return out.astype(np.float32)


def _blink_field(vertices: np.ndarray, uv: np.ndarray, upper: tuple, lower: tuple, frame: FaceFrame) -> np.ndarray:
    """Upper lid onto the lower lid (which drops ``LOWER_LID_DROP`` of the gap), lid skin above following."""
    disp = np.zeros((len(vertices), 2), dtype=np.float64)
    up_idx, low_idx = list(upper[1:-1]), list(lower[1:-1])
    gap = vertices[low_idx] - vertices[up_idx]  # (7, 2) pixels, pointing down
    # the drop fades towards the corners, which stay put
    # flat in the middle (the closed lid follows the lower lid's curve), easing to the corners
    drop = (
        LOWER_LID_DROP
        * np.minimum(1.0, 1.5 * np.sin(np.pi * np.arange(1, len(up_idx) + 1) / (len(up_idx) + 1)))[:, None]
    )
    disp[low_idx] = drop * gap
    disp[up_idx] = (drop + UPPER_LID_REACH) * gap
    lid = vertices[list(upper)]
    lid_move = np.concatenate([[0.0 * gap[0]], disp[up_idx], [0.0 * gap[0]]])
    reach_px = LID_SKIN_REACH * float(np.max(np.linalg.norm(gap, axis=1))) + 1.0
    dist = np.linalg.norm(vertices[:, None, :] - lid[None], axis=2)  # (V, 9)
    nearest = np.argmin(dist, axis=1)
    d_near = dist[np.arange(len(vertices)), nearest]
    lid_uv = uv[list(upper)]
    lid_v = np.interp(uv[:, 0], np.sort(lid_uv[:, 0]), lid_uv[np.argsort(lid_uv[:, 0]), 1])
    in_span = (uv[:, 0] >= lid_uv[:, 0].min() - 0.1) & (uv[:, 0] <= lid_uv[:, 0].max() + 0.1)
    above = (uv[:, 1] < lid_v) & in_span & (d_near < reach_px)
    above[list(upper) + list(lower)] = False
    falloff = (1.0 - d_near / reach_px) ** 2
    # the lid's movement at the point's position across the eye: nothing beyond the corners
    order = np.argsort(lid_uv[:, 0])
    move_across = np.stack([np.interp(uv[:, 0], lid_uv[order, 0], lid_move[order, k]) for k in (0, 1)], axis=1)
    disp[above] = move_across[above] * falloff[above, None]
    return disp
