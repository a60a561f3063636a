"""The embedded renderer on the real portraits, judged by the real MediaPipe face mesh."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from persona_video.errors import InputError
from persona_video.expression import (
    EXPRESSION_NAMES,
    JAW_OPEN,
    MAX_PITCH_RAD,
    MAX_ROLL_RAD,
    MAX_YAW_RAD,
    PITCH,
    ROLL,
    TRANS_X,
    TRANS_Z,
    YAW,
)
from persona_video.render import PortraitAnimator, detect_all_faces, detect_face, load_portrait
from persona_video.render.portraits import decode_portrait


@pytest.fixture(scope="module")
def grace() -> np.ndarray:
    return load_portrait("builtin:grace_hopper")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_portrait("builtin:astronaut")


@pytest.fixture(scope="module")
def animators(grace, astronaut) -> dict[str, PortraitAnimator]:
    return {
        "grace_hopper": PortraitAnimator(grace, detect_face(grace)),
        "astronaut": PortraitAnimator(astronaut, detect_face(astronaut)),
    }


def coeffs(**named: float) -> np.ndarray:
    out = np.zeros(70, dtype=np.float32)
    index = {name: i for i, name in EXPRESSION_NAMES.items()} | {"yaw": YAW, "pitch": PITCH, "roll": ROLL}
    for name, value in named.items():
        out[index[name]] = value
    return out


def seen(frame: np.ndarray) -> np.ndarray:
    faces = detect_all_faces(frame)
    assert len(faces) == 1, "the face mesh must find exactly one face in a rendered frame"
    return faces[0][:, :2]


def mouth_open(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[13] - points[14]) / np.linalg.norm(points[10] - points[152]))


def eye_open(points: np.ndarray) -> float:
    def one(top, bottom, outer, inner):
        return np.linalg.norm(points[top] - points[bottom]) / np.linalg.norm(points[outer] - points[inner])

    return float(0.5 * (one(159, 145, 33, 133) + one(386, 374, 263, 362)))


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_builtin_portraits_load(grace, astronaut):
    assert grace.shape == (600, 512, 3) and grace.dtype == np.uint8
    assert astronaut.shape == (512, 512, 3) and astronaut.dtype == np.uint8


def test_detect_face_finds_478_landmarks(grace):
    landmarks = detect_face(grace)
    assert landmarks.points_px.shape == (478, 2) and landmarks.depth_px.shape == (478,)
    assert 150 < landmarks.face_height_px < 260
    assert landmarks.points_px[1, 0] == pytest.approx(grace.shape[1] / 2, abs=60)  # nose near the middle


@pytest.mark.parametrize("name", ["grace_hopper", "astronaut"])
def test_zero_coefficients_reproduce_the_framed_portrait(animators, name):
    animator = animators[name]
    assert np.array_equal(animator.render_frame(np.zeros(70)), animator.image)
    assert np.array_equal(animator.render_frame(np.zeros(73)), animator.image)


def test_crop_framing_is_512_square_with_face_half_the_height(animators):
    for animator in animators.values():
        frame = animator.render_frame(coeffs(jaw_open=0.3))
        assert frame.shape == (512, 512, 3)
        points = seen(frame)
        face_share = np.linalg.norm(points[10] - points[152]) / 512
        assert 0.4 < face_share < 0.6


def test_full_framing_keeps_the_portrait_rounded_to_even(astronaut):
    odd = np.ascontiguousarray(astronaut[:511, :509])
    animator = PortraitAnimator(odd, detect_face(odd), framing="full")
    frame = animator.render_frame(coeffs(jaw_open=0.5, yaw=0.1))
    assert frame.shape == (510, 508, 3)
    assert np.array_equal(animator.render_frame(np.zeros(70)), odd[:510, :508])


@pytest.mark.parametrize("name", ["grace_hopper", "astronaut"])
def test_jaw_open_opens_the_mouth_the_face_mesh_sees(animators, name):
    animator = animators[name]
    rest = mouth_open(seen(animator.render_frame(np.zeros(70))))
    half = mouth_open(seen(animator.render_frame(coeffs(jaw_open=0.5))))
    full = mouth_open(seen(animator.render_frame(coeffs(jaw_open=1.0))))
    assert rest < half < full
    assert full - rest > 0.05  # at least 5 % of the face height


def test_open_mouth_shows_a_dark_interior_and_teeth(animators):
    animator = animators["grace_hopper"]
    frame = animator.render_frame(coeffs(jaw_open=1.0))
    marks = animator.frame_landmarks(coeffs(jaw_open=1.0)) - 0.5
    top, bottom = marks[13], marks[14]
    column = frame[int(top[1]) + 2 : int(bottom[1]) - 1, int(round(top[0])) + 3].astype(float).mean(axis=1)
    assert column[: len(column) // 4].mean() > 150  # teeth under the upper lip
    assert column[len(column) // 2 :].mean() < 110  # dark cavity below them


@pytest.mark.parametrize("name", ["grace_hopper", "astronaut"])
def test_blink_closes_the_eyes_the_face_mesh_sees(animators, name):
    animator = animators[name]
    rest = eye_open(seen(animator.render_frame(coeffs(smile=0.1))))
    # 0.7: a blink the governor gated down in a pause still shuts the eye (through glasses too)
    for strength in (1.0, 0.7):
        closed = eye_open(seen(animator.render_frame(coeffs(smile=0.1, blink_left=strength, blink_right=strength))))
        assert closed < 0.62 * rest, (strength, closed / rest)  # the checker's blink threshold is 0.65


def test_teeth_stay_fixed_to_the_skull_and_a_dark_gap_opens_below_them(animators):
    animator = animators["astronaut"]  # smiling with her teeth showing at rest
    marks = animator.frame_landmarks(coeffs(jaw_open=0.6)) - 0.5
    frame = animator.render_frame(coeffs(jaw_open=0.6))
    rest_top, rest_bottom = animator.rest_points[13], animator.rest_points[14]
    x = int(round(rest_top[0])) + 3
    teeth_rows = slice(int(rest_top[1]) + 2, int(rest_bottom[1]) - 2)
    # her own upper teeth, pixel for pixel where they were (the jaw moved, the skull did not)
    own = np.abs(frame[teeth_rows, x].astype(int) - animator.image[teeth_rows, x].astype(int))
    assert own.mean() < 6 and animator.image[teeth_rows, x].mean() > 150
    gap_rows = slice(int(rest_bottom[1]) + 3, int(marks[14, 1]) - 3)
    assert gap_rows.stop - gap_rows.start >= 5
    assert frame[gap_rows, x].astype(float).mean() < 110  # the dark mouth below them


@pytest.mark.parametrize("name", ["grace_hopper", "astronaut"])
def test_mouth_opening_the_face_mesh_sees_grows_with_jaw_open(animators, name):
    animator = animators[name]
    opening = [mouth_open(seen(animator.render_frame(coeffs(lip_press=1.0, jaw_open=j)))) for j in (0.0, 0.3, 0.7)]
    assert opening[0] < 0.01  # lips together
    assert opening[0] + 0.02 < opening[1] and opening[1] + 0.02 < opening[2], opening


def test_lip_press_closes_a_mouth_open_at_rest(animators):
    animator = animators["astronaut"]
    rest = mouth_open(seen(animator.render_frame(coeffs(smile=0.1))))
    pressed_frame = animator.render_frame(coeffs(smile=0.1, lip_press=1.0))
    assert rest > 0.05 and mouth_open(seen(pressed_frame)) < 0.01
    # no teeth left between the closed lips: the seam is darker than the lips, not white
    marks = animator.frame_landmarks(coeffs(smile=0.1, lip_press=1.0)) - 0.5
    seam_y = int(round(0.5 * (marks[13, 1] + marks[14, 1])))
    xs = np.arange(int(marks[78, 0]) + 6, int(marks[308, 0]) - 6)
    assert pressed_frame[seam_y - 1 : seam_y + 2, xs].max(axis=0).mean() < 182


@pytest.mark.parametrize("name", ["grace_hopper", "astronaut"])
def test_yaw_turns_the_head_and_leaves_the_far_background_identical(animators, name):
    animator = animators[name]
    rest_frame = animator.render_frame(np.zeros(70))
    rest = seen(rest_frame)
    face_h = np.linalg.norm(rest[10] - rest[152])
    for yaw in (MAX_YAW_RAD, -MAX_YAW_RAD):
        frame = animator.render_frame(coeffs(yaw=yaw))
        nose_dx = seen(frame)[1, 0] - rest[1, 0]
        assert np.sign(nose_dx) == np.sign(yaw) and abs(nose_dx) > 0.04 * face_h
        yy, xx = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]]
        far = np.hypot(xx - rest[:, 0].mean(), yy - rest[:, 1].mean()) > 1.2 * face_h
        assert far.sum() > 10_000
        assert np.array_equal(frame[far], rest_frame[far])


@pytest.mark.parametrize("name", ["grace_hopper", "astronaut"])
def test_no_folded_triangles_over_extreme_poses_and_expressions(animators, name):
    animator = animators[name]
    expressions = [
        {},
        {"jaw_open": 1.2, "lip_wide": 1.2},
        {"lip_round": 1.2, "lip_funnel": 1.2},
        {"lip_press": 1.0},
        {"smile": 1.2, "teeth_show": 1.2, "jaw_open": 1.2},
        {"blink_left": 1, "blink_right": 1, "brow_raise": 1.2},
    ]
    limits = (MAX_YAW_RAD, MAX_PITCH_RAD, MAX_ROLL_RAD)
    for named, signs in itertools.product(expressions, itertools.product((-1, 0, 1), repeat=3)):
        frame_coeffs = coeffs(**named)
        frame_coeffs[YAW : ROLL + 1] = np.array(signs) * limits
        frame_coeffs[TRANS_X : TRANS_Z + 1] = (0.08, -0.08, 0.08)
        placed = animator.place_vertices(animator.clip_coeffs(frame_coeffs))
        folded = animator.folded_triangles(placed)
        assert not folded.any(), f"{named} pose {signs}: triangles {animator.mesh.triangles[folded][:3].tolist()}"


def exact_lookup(animator: PortraitAnimator, placed: np.ndarray) -> np.ndarray:
    """The exact inverse of the piecewise-affine warp at every box pixel (NaN where no triangle)."""
    x0, y0, x1, y1 = animator.box
    lookup = np.full((y1 - y0, x1 - x0, 2), np.nan, np.float32)
    solid = np.flatnonzero(~animator.mesh.hole_triangle_mask)
    for top in range(y0, y1, 16):
        ys, xs = np.mgrid[top : min(top + 16, y1), x0:x1]
        animator._exact_inverse(placed, solid, lookup, np.stack([xs.ravel(), ys.ravel()], axis=1))
    return lookup


@pytest.mark.parametrize("name", ["grace_hopper", "astronaut"])
def test_the_fast_inverse_warp_matches_the_exact_one(animators, name):
    animator = animators[name]
    frame_coeffs = coeffs(jaw_open=0.7, lip_wide=0.4, brow_raise=0.5, yaw=0.12, pitch=-0.06, roll=0.05)
    frame_coeffs[TRANS_X : TRANS_Z + 1] = (0.03, -0.02, 0.03)
    placed = animator.vertex_positions(frame_coeffs)
    from persona_video.render.animator import FIELD_STEP

    x0, y0, x1, y1 = animator.box
    displacement = (placed - animator.rest_vertices).astype(np.float32)
    field = (animator.matrix @ displacement).reshape(*animator.coarse_grid.shape[:2], 2) / FIELD_STEP
    fast = animator._inverse_lookup(field)
    exact = exact_lookup(animator, placed)
    inside = ~np.isnan(exact[..., 0])
    error = np.linalg.norm(fast - exact, axis=2)[inside]
    assert inside.mean() > 0.8
    # a fiftieth of a pixel for most pixels (the field is sampled every FIELD_STEP pixels and
    # upsampled linearly); the rare larger errors sit on the few creases of the field
    assert np.median(error) < 0.02 and np.percentile(error, 99) < 1.0 and np.percentile(error, 99.9) < 6.0


@pytest.mark.parametrize("name", ["grace_hopper", "astronaut"])
def test_no_control_moves_the_anchor_ring(animators, name):
    """The ring that holds the background still stays still under every control, so the
    shoulders near the frame's edge do not tear when the jaw drops."""
    animator = animators[name]
    anchors = animator.mesh.pose_weight == 0.0
    assert anchors.sum() >= 20
    for index in range(10):
        extreme = np.zeros(70)
        extreme[index] = 1.2
        placed = animator.vertex_positions(extreme)
        assert np.array_equal(placed[anchors], animator.rest_vertices[anchors]), EXPRESSION_NAMES[index]
    talking = animator.render_frame(coeffs(jaw_open=1.2, lip_wide=1.2)).astype(int)
    ys, xs = np.mgrid[0 : animator.height, 0 : animator.width]
    outer = np.hypot(xs - animator.face.centre[0], ys - animator.face.centre[1]) >= animator.face.face_h
    assert np.abs(talking - animator.image.astype(int)).max(axis=2)[outer].mean() < 1.5


def test_tooth_gap_distance_is_the_distance_to_the_nearest_edge(animators):
    from persona_video.render.mouth import _TOOTH_EDGES

    values = np.random.default_rng(4).uniform(0.0, 600.0, (24, 40)).astype(np.float32)
    for rest in (animators["grace_hopper"].mouth_rest, animators["astronaut"].mouth_rest):
        edges = _TOOTH_EDGES * rest.half_w
        brute = np.abs(values[..., None] - edges).min(axis=-1)
        assert np.allclose(np.interp(values, *rest.tooth_gaps), brute, atol=1e-3)


def test_frame_landmarks_follow_the_rendered_face(animators):
    animator = animators["astronaut"]
    frame_coeffs = coeffs(jaw_open=0.8, yaw=0.15)
    predicted = animator.frame_landmarks(frame_coeffs)
    measured = seen(animator.render_frame(frame_coeffs))
    assert predicted.shape == (478, 2)
    rigid = [1, 4, 6, 10, 151, 168, 197, 9, 8, 152]
    assert np.median(np.linalg.norm(predicted[rigid] - measured[rigid], axis=1)) < 0.03 * 256


def test_render_yields_one_frame_per_row(animators):
    animator = animators["grace_hopper"]
    track = np.zeros((5, 73), dtype=np.float32)
    track[:, JAW_OPEN] = np.linspace(0, 1, 5)
    frames = list(animator.render(track))
    assert len(frames) == 5 and all(f.shape == (512, 512, 3) for f in frames)
    assert np.array_equal(frames[0], animator.image) and not np.array_equal(frames[-1], animator.image)


@pytest.mark.parametrize("name", ["grace_hopper", "astronaut"])
def test_two_render_threads_draw_the_frames_one_thread_draws(animators, name):
    # the pipeline draws with two threads on one animator: no frame may depend on the other's
    from concurrent.futures import ThreadPoolExecutor

    from persona_video.render.bench import speech_like_coeffs

    animator = animators[name]
    track = speech_like_coeffs(24, seed=4)
    alone = [animator.render_frame(row) for row in track]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(animator.render_frame, track))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))
    assert len({f.tobytes() for f in alone}) > 20  # the frames differ from each other


def test_no_face_is_an_input_error():
    flat = np.full((400, 400, 3), (90, 140, 200), dtype=np.uint8)
    with pytest.raises(InputError, match="no face found"):
        detect_face(flat)


def test_two_faces_is_an_input_error(grace):
    pair = np.concatenate([grace, grace], axis=1)
    with pytest.raises(InputError, match="2 faces"):
        detect_face(pair)


def test_tiny_face_is_an_input_error(astronaut):
    small = np.asarray(Image.fromarray(astronaut).resize((256, 256)))  # face about 53 px tall
    with pytest.raises(InputError, match="too small.*upload a closer photo"):
        detect_face(small)
    canvas = np.full((1600, 1600, 3), 200, dtype=np.uint8)
    canvas[700:828, 700:828] = np.asarray(Image.fromarray(astronaut).resize((128, 128)))
    with pytest.raises(InputError, match="crop closer"):
        detect_face(canvas)


def test_non_image_upload_is_an_input_error(tmp_path):
    fake = tmp_path / "portrait.png"
    fake.write_text("this is not a picture")
    with pytest.raises(InputError, match="portrait.png is not an image: upload a JPEG or PNG photo"):
        load_portrait(str(fake))


def test_uploaded_bytes_decode_and_huge_photos_shrink(astronaut):
    big = np.asarray(Image.fromarray(astronaut).resize((2048, 2048)))
    decoded = decode_portrait(png_bytes(big), name="big.png")
    assert max(decoded.shape[:2]) == 1600
    assert np.array_equal(load_portrait(png_bytes(astronaut)), astronaut)


def test_drawn_teeth_take_the_portraits_light(animators):
    from persona_video.render.mouth import _TEETH_RGB, teeth_colour

    points = animators["grace_hopper"].rest_points
    grey = np.full((512, 512, 3), 128, dtype=np.uint8)
    assert np.allclose(teeth_colour(grey, points, 256.0), _TEETH_RGB, atol=0.5)
    warm = np.zeros_like(grey)
    warm[:] = (210, 140, 100)
    tinted = teeth_colour(warm, points, 256.0)
    assert tinted[0] > _TEETH_RGB[0] - 1 and tinted[2] < _TEETH_RGB[2] - 10  # warmer, still light
    assert tinted.min() > 150 and tinted.max() <= 255
    # the shipped portrait is a warm photograph: its drawn teeth are warmer than neutral ivory
    rest = animators["grace_hopper"].mouth_rest.teeth_rgb
    assert rest[0] / rest[2] > _TEETH_RGB[0] / _TEETH_RGB[2]


def test_the_video_stage_draws_the_animators_pixels_exactly(animators):
    """Frames through the video stage's renderer (two threads a few frames ahead, frames already
    in the store kept) are the animator's own frames bit for bit."""
    from persona_video.encode.encoder import rgb_to_yuv
    from persona_video.pipeline.video import render_ahead
    from persona_video.render.bench import speech_like_coeffs

    animator = animators["astronaut"]
    track = speech_like_coeffs(30)
    expected = np.stack([rgb_to_yuv(animator.render_frame(row)) for row in track])
    assert np.array_equal(np.stack(list(render_ahead(animator, track))), expected)
    store, same = np.zeros_like(expected), np.arange(30) % 3 == 0
    store[same] = expected[same]
    frames = list(render_ahead(animator, track, store, same))
    assert all(np.shares_memory(frame, store[i]) for i, frame in enumerate(frames))
    assert np.array_equal(store, expected)
