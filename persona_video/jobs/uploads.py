"""Uploaded portraits and reference voices, checked before anything is stored.

    upload = save_portrait_upload(data, "me.jpg")   # InputError: not an image, no face, two faces...
    request = Request(..., portrait=str(upload.path))

A portrait must decode as an image of at most 40 megapixels with exactly one
face big enough to animate; a voice must be readable audio of 3-30 s that is
not silent. Accepted files are stored normalized (PNG; 16-bit mono WAV) under
``outputs/uploads/`` with a server-made name, so no client file name ever
reaches the file system; the retention policy expires them.
"""

from __future__ import annotations

import logging
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, NotFoundError
from .folder import outputs_dir

logger = logging.getLogger(__name__)

UPLOAD_KINDS = {"portrait": ".png", "voice": ".wav"}
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Upload:
    upload_id: str  # 32 hex digits
    kind: str  # portrait | voice
    path: Path  # where the normalized file is stored
    detail: dict  # portrait: width, height; voice: duration_s, sample_rate


def uploads_dir(root: Path | None = None) -> Path:
    return (root or outputs_dir()) / "uploads"


def display_name(filename: str | None, fallback: str) -> str:
    """A client's file name reduced to a safe base name for messages (never used as a path)."""
    name = _SAFE_NAME.sub("_", Path(str(filename or "").replace("\\", "/")).name).strip("._")[:64]
    return name or fallback


def upload_path(kind: str, upload_id: str, root: Path | None = None) -> Path:
    """The stored file of an upload; NotFoundError for an unknown kind, a malformed id or a missing file."""
    if kind not in UPLOAD_KINDS:
        raise NotFoundError(f"unknown upload kind {kind!r}: use portrait or voice")
    if not isinstance(upload_id, str) or not _UPLOAD_ID.match(upload_id):
        raise NotFoundError(f"no {kind} upload {str(upload_id)[:40]!r}: upload ids are 32 hexadecimal digits")
    path = uploads_dir(root) / f"{kind}_{upload_id}{UPLOAD_KINDS[kind]}"
    if not path.is_file():
        raise NotFoundError(f"no {kind} upload {upload_id}: it expired or never existed; upload the file again")
    return path


def _store(kind: str, root: Path | None) -> tuple[str, Path, Path]:
    folder = uploads_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    upload_id = uuid.uuid4().hex
    final = folder / f"{kind}_{upload_id}{UPLOAD_KINDS[kind]}"
    return upload_id, final, folder / f".{final.name}.tmp{final.suffix}"


def save_portrait_upload(data: bytes, filename: str | None = None, root: Path | None = None) -> Upload:
    """Check an uploaded portrait (image, size, exactly one big-enough face) and store it as PNG."""
    from PIL import Image

    from ..render import detect_face
    from ..render.portraits import decode_portrait

    name = display_name(filename, "the portrait")
    if not data:
        raise InputError(f"{name} is empty: upload a JPEG or PNG photo with one face")
    image = decode_portrait(data, name=name)
    detect_face(image, name)
    upload_id, final, tmp = _store("portrait", root)
    Image.fromarray(image).save(tmp, format="PNG")
    tmp.replace(final)
    logger.info("stored portrait upload %s (%dx%d)", upload_id, image.shape[1], image.shape[0])
    return Upload(upload_id, "portrait", final, {"width": int(image.shape[1]), "height": int(image.shape[0])})


def save_voice_upload(data: bytes, filename: str | None = None, root: Path | None = None) -> Upload:
    """Check an uploaded reference voice (readable, 3-30 s, not silent) and store it as 16-bit WAV."""
    import soundfile

    from ..speech import validate_reference_upload

    name = display_name(filename, "voice.wav")
    if not data:
        raise InputError(f"{name} is empty: upload a WAV or FLAC recording of 3-30 s of speech")
    with tempfile.TemporaryDirectory(prefix="persona_voice_") as folder:
        probe = Path(folder) / name
        probe.write_bytes(data)
        validate_reference_upload(probe)
        audio, sample_rate = soundfile.read(str(probe), dtype="float32", always_2d=True)
    mono = np.clip(audio.mean(axis=1), -1.0, 1.0)
    upload_id, final, tmp = _store("voice", root)
    soundfile.write(str(tmp), mono, int(sample_rate), subtype="PCM_16", format="WAV")
    tmp.replace(final)
    duration_s = round(len(mono) / sample_rate, 3)
    logger.info("stored voice upload %s (%.1f s)", upload_id, duration_s)
    return Upload(upload_id, "voice", final, {"duration_s": duration_s, "sample_rate": int(sample_rate)})
