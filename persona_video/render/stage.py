"""The render stage's set-up as the pipeline calls it: the request's portrait (an upload or the
persona's) loaded and validated before any work, its face found once and its animator built once
(kept for the last few portraits), and an uploaded portrait saved in the job folder."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..personas import Persona
from ..types import Request

if TYPE_CHECKING:
    from ..jobs.folder import Job

FRAMINGS = ("crop", "full")


@dataclass
class Portrait:
    """A portrait with its face found once and its animator built once."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, as loaded
    key: str  # cache key: content hash + framing
    framing: str
    animator: Any  # render.PortraitAnimator


_ANIMATORS: OrderedDict[str, Any] = OrderedDict()
_ANIMATORS_LOCK = threading.Lock()
_MAX_CACHED = 6


def _animator_for(image: np.ndarray, framing: str) -> tuple[str, Any]:
    from .animator import PortraitAnimator
    from .face import detect_face

    key = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest() + f":{framing}"
    with _ANIMATORS_LOCK:
        if key in _ANIMATORS:
            _ANIMATORS.move_to_end(key)
            return key, _ANIMATORS[key]
    landmarks = detect_face(image)
    animator = PortraitAnimator(image, landmarks, framing=framing)
    with _ANIMATORS_LOCK:
        _ANIMATORS[key] = animator
        while len(_ANIMATORS) > _MAX_CACHED:
            _ANIMATORS.popitem(last=False)
    return key, animator


def load_portrait_for(persona: Persona, upload: str | None, framing: str) -> Portrait:
    """The request's portrait (an uploaded file) or the persona's, validated, with its animator."""
    from .portraits import load_portrait

    if framing not in FRAMINGS:
        raise InputError(f"unknown framing {framing!r}: choose crop or full")
    if upload is not None:
        image = load_portrait(str(upload), None)
    else:
        base = persona.source.parent if persona.source else None
        image = load_portrait(persona.portrait, base)
    key, animator = _animator_for(image, framing)
    return Portrait(image, key, framing, animator)


def save_portrait(job: Job, portrait: Portrait) -> None:
    """portrait.png: the uploaded portrait, so a re-render or a resumed job draws the same face."""
    from PIL import Image

    tmp = job.tmp_path("portrait.png")
    Image.fromarray(portrait.image).save(tmp, format="PNG")
    job.commit("portrait.png")


def load_job_portrait(job: Job, persona: Persona, request: Request) -> Portrait:
    """The portrait a job used: its saved upload, or the persona's."""
    if job.has("portrait.png"):
        return load_portrait_for(persona, str(job.path("portrait.png")), request.framing)
    return load_portrait_for(persona, None, request.framing)
