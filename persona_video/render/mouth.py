"""The mouth interior drawn where the lips part: a dark cavity and an upper teeth band.

Stretching the portrait's closed lips across an open mouth looks like
rubber; a real opening shows the dark mouth and the upper teeth. The fill is
drawn on a small region around the inner-lip polygon and blended in by how
much the mouth is open beyond the portrait's own opening, so a portrait at
rest is left exactly as it is.
"""

from __future__ import annotations

import cv2
import numpy as np

from persona_video.render.shapes import INNER_LIP_POLYGON, LOWER_INNER_LIP, UPPER_INNER_LIP

_SHIFT = 4  # fixed-point bits for sub-pixel polygon drawing
_TEETH_RGB = np.array([232.0, 226.0, 212.0], dtype=np.float32)
_CAVITY_TOP_RGB = np.array([48.0, 16.0, 18.0], dtype=np.float32)
_CAVITY_BOTTOM_RGB = np.array([112.0, 44.0, 46.0], dtype=np.float32)


def inner_gap_px(points: np.ndarray, down: np.ndarray) -> float:
    """Mean opening between the inner lips, pixels, along the face's down axis (points: (≥468, 2))."""
    upper = points[list(UPPER_INNER_LIP[2:-2])]
    lower = points[list(LOWER_INNER_LIP[2:-2])]
    return float(np.mean((lower - upper) @ down))


def paint_mouth_interior(
    frame: np.ndarray, points: np.ndarray, down: np.ndarray, open_alpha: float, teeth_show: float
) -> None:
    """Draw the mouth interior into ``frame`` (H, W, 3) uint8 in place.

    points: (≥468, 2) landmark positions in the frame, pixel-centre coordinates.
    down: (2,) the face's down unit vector.
    open_alpha: 0..1 blend of the drawn interior (0 leaves the lips' own pixels).
    teeth_show: 0..1.2, more upper teeth for "f"/"v" and a raised lip.
    """
    if open_alpha <= 0.0:
        return
    polygon = points[list(INNER_LIP_POLYGON)].astype(np.float64)
    height, width = frame.shape[:2]
    x0 = int(max(np.floor(polygon[:, 0].min()) - 2, 0))
    y0 = int(max(np.floor(polygon[:, 1].min()) - 2, 0))
    x1 = int(min(np.ceil(polygon[:, 0].max()) + 3, width))
    y1 = int(min(np.ceil(polygon[:, 1].max()) + 3, height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    roi_h, roi_w = y1 - y0, x1 - x0
    mask = np.zeros((roi_h, roi_w), dtype=np.uint8)
    fixed = np.round((polygon - (x0, y0)) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 255, lineType=cv2.LINE_AA, shift=_SHIFT)

    upper = points[list(UPPER_INNER_LIP)].astype(np.float64)
    lower = points[list(LOWER_INNER_LIP)].astype(np.float64)
    xs = np.arange(x0, x1, dtype=np.float64)
    order_u, order_l = np.argsort(upper[:, 0]), np.argsort(lower[:, 0])
    # Lip lines as y(x): the portrait is near-upright (roll is at most a few degrees).
    top_y = np.interp(xs, upper[order_u, 0], upper[order_u, 1])
    bottom_y = np.interp(xs, lower[order_l, 0], lower[order_l, 1])
    gap = np.maximum(bottom_y - top_y, 0.0)
    teeth_h = gap * (0.36 + 0.35 * min(max(teeth_show, 0.0), 1.2))
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    depth = np.clip((ys - top_y) / np.maximum(gap, 1.0), 0.0, 1.0)  # 0 at the upper lip, 1 at the lower
    centre_x = 0.5 * (upper[0, 0] + upper[-1, 0])
    half_w = max(0.5 * abs(upper[-1, 0] - upper[0, 0]), 1.0)
    side = np.clip(np.abs(xs - centre_x) / half_w, 0.0, 1.0)[None, :]

    cavity = _CAVITY_TOP_RGB + (_CAVITY_BOTTOM_RGB - _CAVITY_TOP_RGB) * (depth[..., None] ** 2)
    cavity *= (1.0 - 0.45 * side**2)[..., None]
    in_teeth = ys - top_y < teeth_h
    teeth_shade = (1.0 - 0.55 * side**2) * (0.82 + 0.18 * np.clip((ys - top_y) / np.maximum(teeth_h, 1.0), 0, 1))
    teeth = _TEETH_RGB * teeth_shade[..., None]
    # a soft shadow line under the teeth edge and between the central incisors
    edge = np.exp(-(((ys - top_y - teeth_h) / 0.9) ** 2))
    split = np.exp(-(((xs - centre_x) / 0.7) ** 2))[None, :] * in_teeth * 0.35
    teeth *= (1.0 - split)[..., None]
    fill = np.where(in_teeth[..., None], teeth, cavity)
    fill *= (1.0 - 0.5 * edge)[..., None]

    alpha = (mask.astype(np.float32) * (open_alpha / 255.0))[..., None]
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(roi + (fill.astype(np.float32) - roi) * alpha, 0, 255).astype(np.uint8)
