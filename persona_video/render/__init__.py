"""Stage 3c, render: takes the governed MotionTrack and the portrait and gives RGB frames.

Backends: the embedded portrait animator (face mesh + piecewise-affine warp: ``face``, ``mesh``,
``mouth``, ``shapes``, ``animator``, drawn through ``frame_cache``) and SadTalker's renderer
(``sadtalker``). ``stage`` loads the request's portrait once and builds its animator once.
"""

from persona_video.render.animator import PortraitAnimator
from persona_video.render.bench import bench_render
from persona_video.render.face import FaceLandmarks, detect_all_faces, detect_face
from persona_video.render.geometry import frame_portrait
from persona_video.render.portraits import BUILTIN_PORTRAITS, decode_portrait, load_portrait

__all__ = [
    "BUILTIN_PORTRAITS",
    "FaceLandmarks",
    "PortraitAnimator",
    "bench_render",
    "decode_portrait",
    "detect_all_faces",
    "detect_face",
    "frame_portrait",
    "load_portrait",
]
