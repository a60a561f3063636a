"""Numbers read from environment variables, checked, with errors that name the variable and
say what to set. Every numeric ``PERSONA_VIDEO_*`` setting goes through :func:`env_number`."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping


def env_number(
    name: str,
    default: float,
    *,
    example: str,
    whole: bool = False,
    minimum: float | None = None,
    positive: bool = False,
    env: Mapping[str, str] | None = None,
    error: type[Exception] = ValueError,
) -> float:
    """The value of ``name`` (``default`` when unset or blank), an int when ``whole``.

    minimum: the smallest value allowed; positive: the value must be more than 0.
    example: what the message suggests setting, e.g. "512, or 0 for off".
    error: the exception raised for a bad value (ValueError for server settings, the
        project's InputError where the setting travels with a request).
    """
    env = os.environ if env is None else env
    raw = env.get(name, "").strip() or str(default)
    try:
        value = int(raw) if whole else float(raw)
    except ValueError as e:
        kind = "a whole number" if whole else "a number"
        raise error(f"{name} = {raw!r} is not {kind}: set it to e.g. {example}") from e
    if not math.isfinite(value):
        raise error(f"{name} = {raw!r} is not a finite number: set it to e.g. {example}")
    if minimum is not None and value < minimum:
        raise error(f"{name} = {raw} must be {minimum:g} or more: set it to e.g. {example}")
    if positive and not value > 0:
        raise error(f"{name} = {raw} must be more than 0: set it to e.g. {example}")
    return value
