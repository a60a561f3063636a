"""The mouth interior seen between the lips: teeth fixed to the skull, a dark cavity below them.

The piecewise-affine warp stretches whatever lies between the portrait's inner
lips, which turns a smile's teeth into rubber when the jaw drops and squashes
them into a smear when the lips close. Instead, everything inside the placed
inner-lip polygon is redrawn each frame from three layers:

- the upper teeth, fixed to the skull (they move with the head pose, not with
  the lips): the portrait's own mouth interior when its lips are apart at rest,
  otherwise drawn teeth whose brightness grows with the opening;
- a dark cavity in the gap the lowered jaw exposes, with a soft tongue and a
  hint of the lower teeth just above the lower lip;
- the polygon's anti-aliased edge, so the lips themselves keep their pixels.

At rest the skull and the lips have not moved, so the portrait's own interior
comes back pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from persona_video.render.shapes import INNER_LIP_POLYGON, LOWER_INNER_LIP, UPPER_INNER_LIP

_SHIFT = 4  # fixed-point bits for sub-pixel polygon drawing
_MARGIN_PX = 5  # rows above and below the opening redrawn (the seam of closed lips samples them)
#: A portrait whose inner lips are this far apart at rest (face heights) shows its own teeth.
OWN_INTERIOR_MIN_GAP_FACE_H = 0.012
#: Visible height of the drawn upper teeth at the middle of the mouth, face heights.
TEETH_HEIGHT_FACE_H = 0.03
#: Largest visible height of the lower teeth above the lower lip, face heights.
LOWER_TEETH_FACE_H = 0.01
#: Opening (face heights) at which drawn teeth and tongue are fully lit.
FULL_LIGHT_GAP_FACE_H = 0.05
#: Gaps between the upper teeth from the middle outwards, in mouth half widths (incisors to premolars).
_TOOTH_EDGES = np.array([0.0, 0.2, 0.36, 0.5, 0.62, 0.73, 0.84], dtype=np.float32)
_TEETH_RGB = np.array([240.0, 226.0, 204.0], dtype=np.float32)
_TEETH_SHADOW_RGB = np.array([70.0, 30.0, 30.0], dtype=np.float32)
_CAVITY_TOP_RGB = np.array([34.0, 12.0, 14.0], dtype=np.float32)
_CAVITY_BOTTOM_RGB = np.array([82.0, 30.0, 32.0], dtype=np.float32)
_TONGUE_RGB = np.array([150.0, 72.0, 74.0], dtype=np.float32)


def _line(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) lip points -> (x sorted, y) for ``np.interp``."""
    order = np.argsort(points[:, 0], kind="stable")
    return points[order, 0].astype(np.float64), points[order, 1].astype(np.float64)


def inner_gap_px(points: np.ndarray, down: np.ndarray) -> float:
    """Mean opening between the inner lips, pixels, along the face's down axis (points: (≥468, 2))."""
    upper = points[list(UPPER_INNER_LIP[2:-2])]
    lower = points[list(LOWER_INNER_LIP[2:-2])]
    return float(np.mean((lower - upper) @ down))


@dataclass(frozen=True)
class MouthRest:
    """The portrait's inner lips at rest, in frame pixels.

    upper_x, upper_y / lower_x, lower_y: (11,) lip lines sorted by x; centre_x, half_w:
    the mouth's middle and half width; face_h: pixels; own_interior: whether the lips
    are apart at rest, so the portrait's own teeth are shown instead of drawn ones;
    teeth_rgb: (3,) float32 the drawn teeth's colour, lit like the portrait's skin;
    tooth_gaps: (knots, heights) for ``np.interp``: distance from the mouth's middle -> distance
    to the nearest gap between two drawn teeth, pixels.
    """

    upper_x: np.ndarray
    upper_y: np.ndarray
    lower_x: np.ndarray
    lower_y: np.ndarray
    centre_x: float
    half_w: float
    face_h: float
    own_interior: bool
    teeth_rgb: np.ndarray
    tooth_gaps: tuple[np.ndarray, np.ndarray]

    @classmethod
    def from_points(
        cls, points: np.ndarray, down: np.ndarray, face_h: float, image: np.ndarray | None = None
    ) -> MouthRest:
        """points: (≥468, 2) rest landmarks in frame pixels; down: (2,) unit vector; face_h: pixels;
        image: the framed portrait (H, W, 3) uint8, whose cheeks give the light the teeth take."""
        upper_x, upper_y = _line(points[list(UPPER_INNER_LIP)])
        lower_x, lower_y = _line(points[list(LOWER_INNER_LIP)])
        corners = points[[UPPER_INNER_LIP[0], UPPER_INNER_LIP[-1]], 0]
        own = inner_gap_px(points, down) > OWN_INTERIOR_MIN_GAP_FACE_H * face_h
        teeth = _TEETH_RGB if image is None else teeth_colour(image, points, face_h)
        half_w = max(0.5 * float(abs(corners[1] - corners[0])), 1.0)
        return cls(
            upper_x,
            upper_y,
            lower_x,
            lower_y,
            float(corners.mean()),
            half_w,
            float(face_h),
            bool(own),
            teeth,
            _distance_knots(_TOOTH_EDGES * half_w),
        )


#: Cheek landmarks whose surroundings sample the portrait's skin (light and colour cast).
_CHEEKS = (50, 280, 101, 330)
#: How much of the skin's colour cast the drawn teeth take, as an exponent on its ratio to grey.
TEETH_CAST = 0.3


def teeth_colour(image: np.ndarray, points: np.ndarray, face_h: float) -> np.ndarray:
    """(3,) float32: ivory under the portrait's light. A neutral colour drawn into a warm photo
    reads grey-blue beside the skin; the skin's cast (its RGB over its own grey), softened,
    puts the teeth under the same light."""
    radius = max(int(0.03 * face_h), 1)
    height, width = image.shape[:2]
    samples = []
    for index in _CHEEKS:
        x, y = (int(round(v)) for v in points[index])
        patch = image[max(y - radius, 0) : min(y + radius + 1, height), max(x - radius, 0) : min(x + radius + 1, width)]
        if patch.size:
            samples.append(patch.reshape(-1, 3).astype(np.float64))
    if not samples:
        return _TEETH_RGB.copy()
    skin = np.median(np.concatenate(samples), axis=0)
    cast = (np.maximum(skin, 1.0) / max(float(skin.mean()), 1.0)) ** TEETH_CAST
    return np.clip(_TEETH_RGB * cast, 0.0, 255.0).astype(np.float32)


def paint_mouth(
    frame: np.ndarray,
    image: np.ndarray,
    placed: np.ndarray,
    skull: np.ndarray,
    rest: MouthRest,
    teeth_show: float,
) -> None:
    """Redraw the inside of the placed inner-lip polygon of ``frame`` (H, W, 3) uint8 in place.

    image: (H, W, 3) uint8 the framed portrait at rest (source of its own teeth).
    placed: (≥468, 2) this frame's vertex positions, pixel centres.
    skull: (2, 3) affine map from rest pixels to this frame for points fixed to the skull
        (the head pose without the expression).
    teeth_show: 0..1.2, a raised upper lip: drawn teeth a little longer.
    """
    polygon = placed[list(INNER_LIP_POLYGON)].astype(np.float64)
    height, width = frame.shape[:2]
    x0 = int(max(np.floor(polygon[:, 0].min()) - 1, 0))
    y0 = int(max(np.floor(polygon[:, 1].min()) - _MARGIN_PX, 0))
    x1 = int(min(np.ceil(polygon[:, 0].max()) + 2, width))
    y1 = int(min(np.ceil(polygon[:, 1].max()) + _MARGIN_PX + 1, height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    fixed = np.round((polygon - (x0, y0)) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    face_h = rest.face_h
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    top_y = np.interp(xs[0], *_line(placed[list(UPPER_INNER_LIP)])).astype(np.float32)[None, :]
    bottom_y = np.interp(xs[0], *_line(placed[list(LOWER_INNER_LIP)])).astype(np.float32)[None, :]
    gap = np.maximum(bottom_y - top_y, 0.0)  # (1, w) this frame's opening per column
    # every pixel back through the skull: where the teeth fixed to it come from
    inverse = cv2.invertAffineTransform(skull.astype(np.float64)).astype(np.float32)
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    rest_top = np.interp(src_x, rest.upper_x, rest.upper_y).astype(np.float32)
    rest_gap = np.maximum(np.interp(src_x, rest.lower_x, rest.lower_y) - rest_top, 0.0).astype(np.float32)
    depth = src_y - rest_top  # below the upper lip's rest line, pixels, moving with the skull
    side = np.clip(np.abs(src_x - rest.centre_x) / rest.half_w, 0.0, 1.0)
    extra = np.maximum(gap - rest_gap, 0.0)  # opening beyond the portrait's own
    light = np.clip(extra / (FULL_LIGHT_GAP_FACE_H * face_h), 0.0, 1.0)

    # Five layers, back to front, each a colour over what lies behind it: the cavity (darkest
    # behind the upper teeth, lighter low down), the tongue low in the middle, the darkening to
    # the corners, the lower teeth just above the lower lip, the upper teeth. Each layer is a
    # weight, so the mix is one product of per-pixel weights and six colours.
    down_share = np.clip((ys - top_y) / np.maximum(gap, 1.0), 0.0, 1.0)
    low = down_share**2
    tongue = np.exp(-((side / 0.55) ** 2)) * np.clip((down_share - 0.45) / 0.4, 0.0, 1.0) * (0.8 * light)
    corners = 1.0 - 0.55 * side**2
    # lower teeth: a dim band just above the lower lip, showing once the jaw is well down
    lower_h = LOWER_TEETH_FACE_H * face_h * np.clip(extra / (0.06 * face_h) - 0.4, 0.0, 1.0)
    lower_w = np.clip(lower_h - (bottom_y - ys), 0.0, 1.0) * 0.5 * light * np.exp(-((side / 0.5) ** 2))

    own = None
    if rest.own_interior:
        # the portrait's own teeth, mirrored upwards where the upper lip rises above them;
        # once the jaw drops, their lowest rows (the lower lip's inner edge) give way to the cavity
        raised = min(max(teeth_show, 0.0) / 0.2, 1.0)
        stretched = rest_top + 2.0 + 0.2 * (depth - 2.0)  # the teeth's top rows, drawn longer
        map_y = np.where(depth < 2.0, src_y + raised * (stretched - src_y), src_y).astype(np.float32)
        own = cv2.remap(
            image, src_x.astype(np.float32), map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        ).astype(np.float32)
        # at rest the own pixels reach past the lower lip line (the anti-aliased edge keeps the lip)
        opened = np.clip((gap - rest_gap) / 3.0, 0.0, 1.0)
        feather = np.maximum(1.5 * opened, 1e-3)
        teeth_w = np.clip((rest_gap + 1.5 - 3.0 * opened - depth) / feather, 0.0, 1.0)
    else:
        teeth_h = TEETH_HEIGHT_FACE_H * face_h * (1.0 + 0.3 * min(max(teeth_show, 0.0), 1.2)) * (1.0 - 0.4 * side**2)
        # distance to the nearest gap between two teeth, pixels: faint gaps, rounded biting edges
        to_gap = np.interp(np.abs(src_x - rest.centre_x), *rest.tooth_gaps).astype(np.float32)
        teeth_w = np.clip(teeth_h - 0.6 * np.exp(-((to_gap / 2.0) ** 2)) - depth, 0.0, 1.0)
        # under the upper lip's shadow, brighter towards the biting edge, darker to the sides
        shade = (0.7 + 0.3 * np.clip(depth / np.maximum(teeth_h, 1.0), 0.0, 1.0)) * (1.0 - 0.45 * side**2)
        shade *= 1.0 - 0.12 * np.exp(-((to_gap / 0.8) ** 2))
        shade *= 1.0 - 0.35 * np.exp(-np.maximum(ys - top_y, 0.0) / 1.5)
        # shaded towards the mouth's warm dark (light bounced off lips and gums), not towards
        # black: darkened ivory beside red lips reads olive
        lit = shade * (0.65 + 0.35 * light)

    behind_teeth = 1.0 - teeth_w
    cavity = behind_teeth * (1.0 - lower_w) * corners
    layers = [
        (cavity * (1.0 - tongue) * (1.0 - low), _CAVITY_TOP_RGB),
        (cavity * (1.0 - tongue) * low, _CAVITY_BOTTOM_RGB),
        (cavity * tongue, _TONGUE_RGB),
        (behind_teeth * lower_w, 0.62 * rest.teeth_rgb),
    ]
    if own is None:
        layers += [(teeth_w * (1.0 - lit), _TEETH_SHADOW_RGB), (teeth_w * lit, rest.teeth_rgb)]
    weights = np.stack([weight for weight, _ in layers], axis=-1).astype(np.float32)
    fill = weights @ np.stack([colour for _, colour in layers]).astype(np.float32)
    if own is not None:
        fill += own * teeth_w[..., None]

    alpha = (mask.astype(np.float32) * (1.0 / 255.0))[..., None]
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    out = roi + (fill - roi) * alpha
    if rest.own_interior:
        _shade_seam(
            out,
            ys,
            top_y,
            bottom_y,
            gap,
            np.interp(xs[0], rest.upper_x, rest.upper_y),
            np.interp(xs[0], rest.lower_x, rest.lower_y),
        )
    frame[y0:y1, x0:x1] = np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _distance_knots(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots for ``np.interp`` giving |value - the nearest of the sorted ``edges``| for any value
    within 1e5 of them. The distance is piecewise linear (zero at each edge, peaking half-way
    between two), so interpolating through those points gives it exactly."""
    edges = np.asarray(edges, dtype=np.float64)
    far = 1e5
    middles = 0.5 * (edges[1:] + edges[:-1])
    inner = np.column_stack([edges[:-1], middles]).ravel()
    knots = np.concatenate([[edges[0] - far], inner, [edges[-1], edges[-1] + far]])
    peaks = np.column_stack([np.zeros(len(middles)), 0.5 * np.diff(edges)]).ravel()
    heights = np.concatenate([[far], peaks, [0.0, far]])
    return knots, heights


def _shade_seam(
    out: np.ndarray,
    ys: np.ndarray,
    top_y: np.ndarray,
    bottom_y: np.ndarray,
    gap: np.ndarray,
    rest_top: np.ndarray,
    rest_bottom: np.ndarray,
) -> None:
    """Where the lips close beyond the portrait's own opening, draw the dark line between them.

    The landmarks' inner contour sits a pixel or two inside the teeth, so lips brought together
    would otherwise meet on a thin light line. out: (h, w, 3) float32 region, changed in place;
    ys: (h, 1) rows; the rest: (1, w) or (w,) per column, pixels.
    """
    rest_gap = (rest_bottom - rest_top)[None, :]
    closing = np.clip(1.0 - gap / 3.0, 0.0, 1.0) * np.clip(rest_gap - gap - 1.0, 0.0, 1.0)
    if not closing.any():
        return
    height = out.shape[0]
    rows = np.arange(out.shape[1])
    above = np.clip(np.floor(top_y[0] - ys[0, 0]).astype(int) - 3, 0, height - 1)
    below = np.clip(np.ceil(bottom_y[0] - ys[0, 0]).astype(int) + 3, 0, height - 1)
    lip_rgb = 0.5 * (out[above, rows] + out[below, rows]) * 0.62  # (w, 3)
    centre = 0.5 * (top_y + bottom_y)
    weight = np.exp(-(((ys - centre) / 1.1) ** 2)) * closing
    out += (lip_rgb[None, :, :] - out) * weight[..., None]
