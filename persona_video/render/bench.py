"""Renderer benchmark: frames per second on one thread (DESIGN.md target: >= 200 at 512x512)."""

from __future__ import annotations

import time

import cv2
import numpy as np

from persona_video.expression import BLINK_LEFT, BLINK_RIGHT, JAW_OPEN, LIP_ROUND, LIP_WIDE, PITCH, ROLL, YAW
from persona_video.render.animator import PortraitAnimator
from persona_video.render.face import detect_face
from persona_video.render.portraits import load_portrait


def speech_like_coeffs(num_frames: int, fps: float = 25.0, seed: int = 0) -> np.ndarray:
    """(T, 70) float32 coefficients shaped like talking: syllable-rate jaw, lip shapes,
    a blink every ~3 s and slow head motion."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / fps
    coeffs = np.zeros((num_frames, 70), dtype=np.float32)
    coeffs[:, JAW_OPEN] = np.clip(0.45 + 0.45 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, 1)
    coeffs[:, LIP_WIDE] = np.clip(0.5 * np.sin(2 * np.pi * 1.3 * t), 0, 1)
    coeffs[:, LIP_ROUND] = np.clip(-0.5 * np.sin(2 * np.pi * 1.3 * t), 0, 1)
    blink = np.zeros(num_frames, dtype=np.float32)
    for start in range(10, num_frames, 75):
        blink[start : start + 4] = (0.5, 1.0, 1.0, 0.5)[: len(blink[start : start + 4])]
    coeffs[:, BLINK_LEFT] = coeffs[:, BLINK_RIGHT] = blink
    coeffs[:, YAW] = 0.12 * np.sin(2 * np.pi * 0.3 * t)
    coeffs[:, PITCH] = 0.05 * np.sin(2 * np.pi * 0.5 * t + 1.0)
    coeffs[:, ROLL] = 0.03 * np.sin(2 * np.pi * 0.2 * t)
    return coeffs


def bench_render(num_frames: int = 250, portrait: str = "builtin:grace_hopper", out_size: int = 512) -> dict:
    """Render ``num_frames`` speech-like frames on one OpenCV thread.

    Returns {"frames_per_s", "ms_per_frame", "setup_s", "frame_size"}; set-up
    (face mesh, mesh, matrices) is timed separately from rendering.
    """
    previous_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        image = load_portrait(portrait)
        start = time.perf_counter()
        animator = PortraitAnimator(image, detect_face(image), framing="crop", out_size=out_size)
        setup_s = time.perf_counter() - start
        coeffs = speech_like_coeffs(num_frames)
        animator.render_frame(coeffs[0])  # warm caches
        start = time.perf_counter()
        for _frame in animator.render(coeffs):
            pass
        render_s = time.perf_counter() - start
    finally:
        cv2.setNumThreads(previous_threads)
    return {
        "frames_per_s": round(num_frames / render_s, 1),
        "ms_per_frame": round(1000.0 * render_s / num_frames, 3),
        "setup_s": round(setup_s, 3),
        "frame_size": [animator.width, animator.height],
    }
