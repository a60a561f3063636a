"""Personas: presenter style presets, one TOML file each in ``personas/``.

A new persona is a new file, no code. Loading validates every key and range;
an unknown key or an out-of-range value is an :class:`InputError` naming the
file and the key. See the README, "Persona files", for the format.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InputError, NotFoundError

logger = logging.getLogger(__name__)

#: Folder of the shipped persona files; PERSONA_VIDEO_PERSONAS points elsewhere.
PERSONAS_DIR = Path(__file__).resolve().parent.parent / "personas"
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class ScriptStyle:
    temperature: float = 0.7  # LLM sampling temperature, 0..2
    max_tokens: int = 400  # script length bound in LLM tokens, 16..2048
    pause_range_s: tuple[float, float] = (0.3, 0.4)  # pause length range, seconds, 0.05..2
    emphasis_words: tuple[int, int] = (1, 2)  # emphasised words per sentence, 0..8
    tone: str = "measured"  # offline writer's phrasing: measured | energetic


@dataclass(frozen=True)
class SpeechStyle:
    backend: str = "auto"  # auto | hibari | piper | xtts
    voice: str = "heart"  # heart | joe (or an xtts speaker)
    speed: float = 1.0  # speaking rate multiplier, 0.5..2
    reference_wav: str = ""  # xtts cloning reference, path relative to the persona file


@dataclass(frozen=True)
class MotionStyle:
    head_amplitude: float = 1.0  # scale of head drift and nods, 0..2
    nod_strength: float = 1.0  # nod size on emphasis onsets, 0..2
    blink_rate_per_min: float = 15.0  # average blinks per minute, 4..40
    expressiveness: float = 1.0  # scale of smiles and brow raises, 0..2


@dataclass(frozen=True)
class Persona:
    id: str
    name: str
    description: str
    style_prompt: str
    portrait: str  # "builtin:NAME" or a path (resolved against the persona file)
    script: ScriptStyle = field(default_factory=ScriptStyle)
    speech: SpeechStyle = field(default_factory=SpeechStyle)
    motion: MotionStyle = field(default_factory=MotionStyle)
    governor: dict[str, Any] = field(default_factory=dict)  # GovernorConfig fields
    source: Path | None = None  # the file it was loaded from

    def governor_config(self):
        """The persona's GovernorConfig (defaults for the governor sliders)."""
        from .governor import GovernorConfig

        return GovernorConfig.from_dict(self.governor)

    def resolve_path(self, value: str) -> Path:
        """A path from the persona file, relative to that file's folder."""
        path = Path(value)
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path


_RANGES: dict[str, tuple[float, float]] = {
    "script.temperature": (0.0, 2.0),
    "script.max_tokens": (16, 2048),
    "script.pause_range_s": (0.05, 2.0),
    "script.emphasis_words": (0, 8),
    "speech.speed": (0.5, 2.0),
    "motion.head_amplitude": (0.0, 2.0),
    "motion.nod_strength": (0.0, 2.0),
    "motion.blink_rate_per_min": (4.0, 40.0),
    "motion.expressiveness": (0.0, 2.0),
}
_BACKENDS = ("auto", "hibari", "piper", "xtts")
TONES = ("measured", "energetic")


def _check_range(where: str, key: str, value: Any) -> None:
    lo, hi = _RANGES[key]
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{where}: '{key}' must be a number, got {v!r}")
        if not lo <= v <= hi:
            raise InputError(f"{where}: '{key}' = {v} is out of range [{lo}, {hi}]")


def _build_table(where: str, table_name: str, cls: type, data: Any):
    if not isinstance(data, dict):
        raise InputError(f"{where}: [{table_name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise InputError(f"{where}: unknown key '{table_name}.{key}' (known: {', '.join(known)})")
    values: dict[str, Any] = {}
    for key, value in data.items():
        full_key = f"{table_name}.{key}"
        if full_key in _RANGES:
            _check_range(where, full_key, value)
        default = getattr(cls(), key)
        if isinstance(default, tuple):
            if not isinstance(value, list) or len(value) != 2 or value[0] > value[1]:
                raise InputError(f"{where}: '{full_key}' must be [min, max] with min <= max, got {value!r}")
            value = tuple(type(default[0])(v) for v in value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise InputError(f"{where}: '{full_key}' must be a string, got {value!r}")
        else:
            value = type(default)(value)
        values[key] = value
    return cls(**values)


def parse_persona(data: dict[str, Any], source: Path | None = None) -> Persona:
    """Validate a persona's TOML table and build the Persona.

    Raises InputError naming the file and the key for anything unknown or out of range.
    """
    where = str(source) if source else "persona"
    top_keys = {"id", "name", "description", "style_prompt", "portrait"}
    tables = {"script": ScriptStyle, "speech": SpeechStyle, "motion": MotionStyle}
    for key in data:
        if key not in top_keys and key not in tables and key != "governor":
            raise InputError(f"{where}: unknown key '{key}'")
    for key in top_keys:
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise InputError(f"{where}: '{key}' is required and must be a non-empty string")
    persona_id = data["id"]
    if not _ID_PATTERN.match(persona_id):
        raise InputError(f"{where}: 'id' = {persona_id!r} must be lower-case letters, digits, '-' or '_'")
    built = {name: _build_table(where, name, cls, data.get(name, {})) for name, cls in tables.items()}
    if built["script"].tone not in TONES:
        raise InputError(f"{where}: 'script.tone' = {built['script'].tone!r} must be one of {', '.join(TONES)}")
    if built["speech"].backend not in _BACKENDS:
        raise InputError(
            f"{where}: 'speech.backend' = {built['speech'].backend!r} must be one of {', '.join(_BACKENDS)}"
        )
    governor = data.get("governor", {})
    if not isinstance(governor, dict):
        raise InputError(f"{where}: [governor] must be a table")
    persona = Persona(
        id=persona_id,
        name=data["name"].strip(),
        description=data["description"].strip(),
        style_prompt=data["style_prompt"].strip(),
        portrait=data["portrait"].strip(),
        governor=dict(governor),
        source=source,
        **built,
    )
    try:
        persona.governor_config()
    except (ValueError, TypeError) as e:
        raise InputError(f"{where}: [governor] {e}") from e
    return persona


def load_persona_file(path: Path) -> Persona:
    """Read and validate one persona file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {e}") from e
    persona = parse_persona(data, source=path.resolve())
    if persona.id != path.stem:
        raise InputError(f"{path}: 'id' = {persona.id!r} must match the file name {path.stem!r}")
    return persona


def personas_dir() -> Path:
    return Path(os.environ.get("PERSONA_VIDEO_PERSONAS", PERSONAS_DIR))


def list_personas(directory: Path | None = None) -> list[Persona]:
    """All personas in the folder, sorted by id."""
    directory = directory or personas_dir()
    return [load_persona_file(p) for p in sorted(directory.glob("*.toml"))]


def load_persona(persona_id: str, directory: Path | None = None) -> Persona:
    """The persona with this id, or NotFoundError listing the known ones."""
    directory = directory or personas_dir()
    if not isinstance(persona_id, str) or not _ID_PATTERN.match(persona_id):
        known = ", ".join(p.stem for p in sorted(directory.glob("*.toml")))
        raise NotFoundError(f"unknown persona {persona_id!r}: choose one of {known}")
    path = directory / f"{persona_id}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(directory.glob("*.toml")))
        raise NotFoundError(f"unknown persona {persona_id!r}: choose one of {known}")
    return load_persona_file(path)
