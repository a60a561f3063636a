"""Portrait images: the bundled public-domain ones and user uploads.

``load_portrait`` turns a portrait spec (``builtin:<name>``, a file path, or
the raw bytes of an upload) into an RGB uint8 array, refusing what is not an
image or is too large to be a photo, and shrinking very large photos so the
renderer's one-time set-up stays fast.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from persona_video.errors import InputError, NotFoundError

logger = logging.getLogger(__name__)

#: Images above this many pixels are refused before decoding (decompression bombs, scans).
MAX_PORTRAIT_PIXELS = 40_000_000
#: Longest side kept after loading, pixels; larger photos are downscaled.
MAX_PORTRAIT_SIDE_PX = 1600
#: Smallest side accepted, pixels.
MIN_PORTRAIT_SIDE_PX = 64

BUILTIN_PORTRAITS: tuple[str, ...] = ("grace_hopper", "astronaut")


def _builtin(name: str) -> np.ndarray:
    if name == "grace_hopper":
        import matplotlib.cbook

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if name == "astronaut":
        import skimage.data

        return np.ascontiguousarray(skimage.data.astronaut()[..., :3], dtype=np.uint8)
    raise NotFoundError(f"unknown built-in portrait {name!r}: choose one of {', '.join(BUILTIN_PORTRAITS)}")


def decode_portrait(data: bytes, name: str = "portrait") -> np.ndarray:
    """Decode an uploaded image file's bytes to (H, W, 3) uint8 RGB.

    Raises InputError when the bytes are not a JPEG/PNG/WebP image, when the
    image is over ``MAX_PORTRAIT_PIXELS`` (checked from the header, before
    decoding) or smaller than ``MIN_PORTRAIT_SIDE_PX``.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PORTRAIT_PIXELS:
                raise InputError(
                    f"{name} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels): "
                    f"upload a smaller image (at most {MAX_PORTRAIT_PIXELS // 1_000_000} megapixels)"
                )
            if min(width, height) < MIN_PORTRAIT_SIDE_PX:
                raise InputError(
                    f"{name} is only {width}x{height} pixels: upload a photo at least "
                    f"{MIN_PORTRAIT_SIDE_PX} pixels on each side"
                )
            if max(width, height) > MAX_PORTRAIT_SIDE_PX:
                # draft() lets JPEG decode at a reduced scale directly.
                image.draft("RGB", (MAX_PORTRAIT_SIDE_PX, MAX_PORTRAIT_SIDE_PX))
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as e:
        raise InputError(f"{name} is not an image: upload a JPEG or PNG photo") from e
    if max(rgb.size) > MAX_PORTRAIT_SIDE_PX:
        scale = MAX_PORTRAIT_SIDE_PX / max(rgb.size)
        new_size = (max(1, round(rgb.size[0] * scale)), max(1, round(rgb.size[1] * scale)))
        logger.info("downscaling %s from %s to %s", name, rgb.size, new_size)
        rgb = rgb.resize(new_size, Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)


def load_portrait(spec: str | Path | bytes, base_dir: Path | None = None) -> np.ndarray:
    """Load a portrait as (H, W, 3) uint8 RGB.

    spec: ``"builtin:grace_hopper"`` / ``"builtin:astronaut"``, a file path
        (relative paths resolve against ``base_dir``), or an upload's bytes.
    Raises NotFoundError for an unknown built-in or a missing file, InputError
    for a file that is not a usable image.
    """
    if isinstance(spec, (bytes, bytearray)):
        return decode_portrait(bytes(spec))
    text = str(spec)
    if text.startswith("builtin:"):
        return _builtin(text.removeprefix("builtin:"))
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise NotFoundError(f"portrait file {path} does not exist: check the path or upload the photo again")
    return decode_portrait(path.read_bytes(), name=path.name)
