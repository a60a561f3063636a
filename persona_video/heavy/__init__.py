"""Heavy GPU backends: XTTS v2 speech, SadTalker motion and render, GFPGAN enhancement.

Each submodule imports torch (or a torch-based package) only when a backend
is built or loaded, and the package itself imports nothing heavy, so the core
install never needs torch. Availability and reasons: ``persona_video.weights.registry.backend_status``.
"""
