"""The one weights registry: name -> file under the checkpoints folder (which heavy backends can
run here is ``runtime.py``).

The entries themselves (source, size, SHA-256, licence) are in ``catalog.py``.
The folder is ``checkpoints/`` beside the package, or the folder named by the
environment variable ``PERSONA_VIDEO_CHECKPOINTS``. A Hub-hosted file that is
not there is also looked for in the Hugging Face cache at its pinned revision
(where a Space's ``preload_from_hub`` puts it). Nothing here downloads:
``python -m persona_video fetch NAME`` does (``fetch.py``).

"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from persona_video.errors import BackendUnavailable, InputError
from persona_video.weights.catalog import ALL_GROUP, WEIGHT_LIST, HubFile, Weight

logger = logging.getLogger(__name__)

#: Environment variable that points at another checkpoints folder.
CHECKPOINTS_ENV = "PERSONA_VIDEO_CHECKPOINTS"
#: Environment variable with the path of a SadTalker checkout (its git clone).
SADTALKER_DIR_ENV = "PERSONA_VIDEO_SADTALKER_DIR"
#: Environment variable with the Python interpreter of SadTalker's own environment.
SADTALKER_PYTHON_ENV = "PERSONA_VIDEO_SADTALKER_PYTHON"

DEFAULT_CHECKPOINTS_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
#: File in the checkpoints folder where fetch records the SHA-256 it checked, so doctor need not re-hash.
RECORD_NAME = ".verified.json"
_RECORD_LOCK = threading.Lock()

#: name -> Weight, the registry itself.
WEIGHTS: dict[str, Weight] = {w.name: w for w in WEIGHT_LIST}
#: group name -> its entries, in registry order ("all" is every entry).
GROUPS: dict[str, tuple[Weight, ...]] = {
    group: tuple(w for w in WEIGHT_LIST if w.group == group) for group in dict.fromkeys(w.group for w in WEIGHT_LIST)
}

#: Heavy backend -> (pipeline stage, Python modules it imports, whether CPU is acceptable).
HEAVY_BACKENDS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "xtts": ("speech", ("torch", "TTS", "six"), True),
    "sadtalker": ("motion/render", (), False),
    "gfpgan": ("enhance", ("torch", "spandrel"), True),
}

#: Files SadTalker's own code needs inside its checkout (its face models come from the registry).
SADTALKER_CHECKOUT_FILES = (
    "inference.py",
    "src/test_audio2coeff.py",
    "src/config/facerender.yaml",
)


def checkpoints_dir() -> Path:
    """The checkpoints folder: $PERSONA_VIDEO_CHECKPOINTS or ``checkpoints/`` beside the package."""
    override = os.environ.get(CHECKPOINTS_ENV, "").strip()
    return Path(override).expanduser().resolve() if override else DEFAULT_CHECKPOINTS_DIR


def fetch_command(weight: Weight) -> str:
    """The command that downloads (or verifies) this file: ``python -m persona_video fetch GROUP``."""
    return f"python -m persona_video fetch {weight.group}"


def resolve_names(names: Iterable[str]) -> list[Weight]:
    """Entries for group names ("llm", "xtts", "all", ...) and entry names ("xtts_model"), in order, once each.

    Raises InputError naming the known groups for a name that is neither.
    """
    chosen: dict[str, Weight] = {}
    for raw in names:
        name = raw.strip()
        if name == ALL_GROUP:
            found: tuple[Weight, ...] = WEIGHT_LIST
        elif name in GROUPS:
            found = GROUPS[name]
        elif name in WEIGHTS:
            found = (WEIGHTS[name],)
        else:
            raise InputError(
                f"unknown weights name {name!r}: use a group ({', '.join([*GROUPS, ALL_GROUP])}) "
                f"or a file name ({', '.join(WEIGHTS)})"
            )
        for weight in found:
            chosen.setdefault(weight.name, weight)
    if not chosen:
        raise InputError(f"name what to fetch: a group ({', '.join([*GROUPS, ALL_GROUP])}) or a file name")
    return list(chosen.values())


def local_path(weight: Weight, root: Path | None = None) -> Path:
    """Where the file lives (or will, once fetched) under the checkpoints folder."""
    return (root or checkpoints_dir()) / weight.relative_path


def hub_cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """The Hugging Face cache from $HF_HUB_CACHE or $HF_HOME/hub; None means the library's default."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE", "").strip():
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME", "").strip():
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return None


def hub_cache_path(weight: Weight, env: Mapping[str, str] | None = None) -> Path | None:
    """The file in the Hugging Face cache at its pinned revision, or None (also for release-URL entries)."""
    if not isinstance(weight.source, HubFile):
        return None
    from huggingface_hub import try_to_load_from_cache

    source = weight.source
    found = try_to_load_from_cache(
        source.repo_id, source.filename, cache_dir=hub_cache_dir(env), revision=source.revision
    )
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def find_weight(weight: Weight, root: Path | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """Where the file is: the checkpoints folder first, then the Hub cache; None when in neither."""
    path = local_path(weight, root)
    if path.is_file():
        return path
    return hub_cache_path(weight, env)


def weight_path(name: str, root: Path | None = None) -> Path:
    """Full path of a registered weights file: where it was found, else where ``fetch`` puts it."""
    if name not in WEIGHTS:
        raise KeyError(f"unknown weights name {name!r}: known names are {', '.join(WEIGHTS)}")
    weight = WEIGHTS[name]
    return find_weight(weight, root) or local_path(weight, root)


def backend_dir(backend: str, root: Path | None = None) -> Path:
    """Folder holding one backend's files, e.g. ``checkpoints/xtts_v2`` (or its Hub cache snapshot)."""
    first = next(w for w in WEIGHT_LIST if w.backend == backend)
    return weight_path(first.name, root).parent


def missing_weights(backend: str, root: Path | None = None) -> list[Path]:
    """Full paths of the backend's required registered files that are not there."""
    return [
        local_path(w, root)
        for w in WEIGHT_LIST
        if w.backend == backend and w.required and not weight_path(w.name, root).is_file()
    ]


def require_weights(backend: str, root: Path | None = None) -> None:
    """Raise BackendUnavailable naming every missing file of ``backend`` and how to provide it."""
    missing = missing_weights(backend, root)
    if missing:
        group = next(w.group for w in WEIGHT_LIST if w.backend == backend)
        raise BackendUnavailable(
            f"{backend} weights missing: {', '.join(str(p) for p in missing)}. "
            f"Run `python -m persona_video fetch {group}`, or set {CHECKPOINTS_ENV} to the folder that holds them."
        )


def _read_records(root: Path) -> dict:
    try:
        return json.loads((root / RECORD_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        logger.warning("ignoring unreadable %s: %s", root / RECORD_NAME, e)
        return {}


def record_checked(weight: Weight, path: Path, sha256: str, root: Path | None = None) -> None:
    """Remember that ``path`` (as it is now: size, mtime) has this SHA-256, so doctor need not hash it again."""
    root = root or checkpoints_dir()
    stat = path.stat()
    with _RECORD_LOCK:
        records = _read_records(root)
        records[weight.name] = {
            "path": str(path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256,
        }
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{RECORD_NAME}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, root / RECORD_NAME)


def checked_sha256(weight: Weight, path: Path, root: Path | None = None) -> str | None:
    """The SHA-256 recorded for ``path`` if the file has not changed since (same size and mtime), else None."""
    record = _read_records(root or checkpoints_dir()).get(weight.name)
    if not isinstance(record, dict):
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    same = (
        record.get("path") == str(path.resolve())
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
    )
    return record.get("sha256") if same else None


@dataclass(frozen=True)
class WeightState:
    """What is on disk for one entry.

    state: "verified" (size and pinned SHA-256 match), "unverified" (right size,
    SHA-256 not checked or no pin to check it against), "wrong size" or "missing".
    path: where it was found (checkpoints folder or Hub cache); where fetch puts it when missing.
    detail: one sentence for people; fix: the command that resolves it ("" when verified).
    """

    weight: Weight
    state: str
    path: Path
    detail: str
    fix: str

    def to_dict(self) -> dict:
        return {
            "name": self.weight.name,
            "group": self.weight.group,
            "backend": self.weight.backend,
            "state": self.state,
            "path": str(self.path),
            "size": self.weight.size,
            "licence": self.weight.licence,
            "detail": self.detail,
            "fix": self.fix,
        }


def weight_state(weight: Weight, root: Path | None = None, env: Mapping[str, str] | None = None) -> WeightState:
    """State of one entry on disk, from its size and the recorded SHA-256 (it never hashes the file)."""
    found = find_weight(weight, root, env)
    command = fetch_command(weight)
    if found is None:
        detail = "not in the Hugging Face cache either" if isinstance(weight.source, HubFile) else ""
        return WeightState(weight, "missing", local_path(weight, root), detail, command)
    where = " (in the Hugging Face cache)" if found != local_path(weight, root) else ""
    size = found.stat().st_size
    if size != weight.size:
        detail = f"{size:,} bytes, expected {weight.size:,}{where}: a partial copy or another file"
        return WeightState(weight, "wrong size", found, detail, command)
    recorded = checked_sha256(weight, found, root)
    if weight.sha256 is None:
        note = f"SHA-256 recorded on first download {recorded}" if recorded else "SHA-256 not recorded yet"
        detail = f"right size{where}; no public SHA-256 to check it against ({note})"
        return WeightState(weight, "unverified", found, detail, "" if recorded else command)
    if recorded == weight.sha256:
        return WeightState(weight, "verified", found, f"size and SHA-256 match the pin{where}", "")
    detail = f"right size{where}, SHA-256 not checked yet (fetch checks it without downloading again)"
    return WeightState(weight, "unverified", found, detail, command)


def weights_report(root: Path | None = None, env: Mapping[str, str] | None = None) -> list[WeightState]:
    """The state of every registry entry, in registry order."""
    return [weight_state(w, root, env) for w in WEIGHT_LIST]


def preload_from_hub(groups: Iterable[str] | None = None) -> list[str]:
    """The README front matter's ``preload_from_hub`` lines for the Hub-hosted entries:
    ``"repo_id file1,file2 revision"``, one per repository and revision."""
    wanted = set(groups) if groups is not None else None
    by_repo: dict[tuple[str, str], list[str]] = {}
    for weight in WEIGHT_LIST:
        if isinstance(weight.source, HubFile) and (wanted is None or weight.group in wanted):
            by_repo.setdefault((weight.source.repo_id, weight.source.revision), []).append(weight.source.filename)
    return [f"{repo} {','.join(files)} {revision}" for (repo, revision), files in by_repo.items()]
