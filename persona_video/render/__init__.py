"""Stage 3c, embedded renderer: the portrait animator (face mesh + piecewise-affine warp)."""

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
