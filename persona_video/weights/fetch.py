"""Download registry entries, verified: ``python -m persona_video fetch NAME...``.

Each file is written to a hidden temporary name beside its place
(``.NAME.part``), checked by our own code (size, then SHA-256) and renamed into
place only when both match; a mismatch deletes it, so nothing is left behind.
A cut connection or a stall keeps the ``.part`` file and the next call resumes
it with an HTTP Range request (``transfer.py`` does the HTTP). Free disk space
is checked before the first byte is fetched; a licence that asks for explicit
agreement is checked before anything else.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from persona_video.errors import FetchError
from persona_video.weights.catalog import Weight
from persona_video.weights.registry import (
    CHECKPOINTS_ENV,
    checked_sha256,
    checkpoints_dir,
    fetch_command,
    find_weight,
    local_path,
    record_checked,
    resolve_names,
)
from persona_video.weights.transfer import TRANSPORT_ERRORS, TransferSettings, receive, status_error, transport_error

logger = logging.getLogger(__name__)

#: Bytes per read while hashing.
HASH_CHUNK_BYTES = 1 << 20
#: Folder under the checkpoints folder for the per-entry lock files.
LOCKS_DIR = ".locks"


@dataclass(frozen=True)
class FetchProgress:
    """Where a fetch stands.

    name: the entry being worked on; phase: "downloading" | "verifying".
    file_done / file_total: bytes of this file (downloaded, or hashed while verifying).
    done / total: bytes downloaded over every file this call downloads (0..total).
    """

    name: str
    phase: str
    file_done: int
    file_total: int
    done: int
    total: int

    @property
    def fraction(self) -> float:
        """0..1 over the whole call (downloads only; verifying counts as done)."""
        return min(1.0, self.done / self.total) if self.total else 1.0


@dataclass(frozen=True)
class FetchResult:
    """One entry after fetch: where it is and what was done.

    action: "downloaded" | "present" (already there and checked before) |
    "verified" (already there, hashed now) | "hub cache" (found in the Hugging Face cache).
    """

    name: str
    path: Path
    action: str
    sha256: str


Progress = Callable[[FetchProgress], None]


def _fmt_bytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """Hex SHA-256 of a file, read in chunks; ``on_bytes(n)`` after each chunk."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


def _check_agreements(weights: Sequence[Weight], env: Mapping[str, str]) -> None:
    for weight in weights:
        variable = weight.agreement_env
        if variable and env.get(variable, "").strip() != "1":
            raise FetchError(
                "licence",
                f"{weight.name} is under the {weight.licence} ({weight.licence_url}), which asks for explicit "
                f"agreement: read it, and if you agree run `{variable}=1 {fetch_command(weight)}` "
                f"(the same variable coqui-tts itself reads)",
            )


def _already_there(weight: Weight, root: Path, env: Mapping[str, str], progress: Progress | None) -> FetchResult | None:
    """The entry when it is already on disk with the right bytes (hashing it once if never checked)."""
    found = find_weight(weight, root, env)
    if found is None or found.stat().st_size != weight.size:
        return None
    present = _recorded(weight, root, env)
    if present is not None:
        return present
    hashed = 0

    def on_bytes(count: int) -> None:
        nonlocal hashed
        hashed += count
        if progress is not None:
            progress(FetchProgress(weight.name, "verifying", hashed, weight.size, 0, 0))

    digest = sha256_file(found, on_bytes)
    if weight.sha256 is not None and digest != weight.sha256:
        logger.warning(
            "%s has the right size but SHA-256 %s, not %s: downloading it again", found, digest, weight.sha256
        )
        return None
    record_checked(weight, found, digest, root)
    return FetchResult(weight.name, found, "hub cache" if found != local_path(weight, root) else "verified", digest)


def _part_path(weight: Weight, root: Path) -> Path:
    target = local_path(weight, root)
    return target.with_name(f".{target.name}.part")


def _part_size(weight: Weight, root: Path) -> int:
    part = _part_path(weight, root)
    size = part.stat().st_size if part.is_file() else 0
    return size if size <= weight.size else 0


def _check_disk(weights: Sequence[Weight], root: Path) -> None:
    needed = sum(w.size - _part_size(w, root) for w in weights)
    probe = root
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise FetchError(
            "disk_full",
            f"{', '.join(w.name for w in weights)} need {_fmt_bytes(needed)} in {root}, but only {_fmt_bytes(free)} "
            f"is free: free some space, or set {CHECKPOINTS_ENV} to a folder on a disk with room, and fetch again",
        )


class _Counter:
    """Bytes downloaded over the whole call, reported to the progress callback."""

    def __init__(self, total: int, done: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, done, progress

    def report(self, weight: Weight, phase: str, file_done: int) -> None:
        if self.progress is not None:
            self.progress(FetchProgress(weight.name, phase, file_done, weight.size, self.done, self.total))


def _download(
    weight: Weight, root: Path, settings: TransferSettings, retries: int, retry_wait_s: float, counter: _Counter
) -> FetchResult:
    """Download one entry into its partial file (resuming it), verify it, rename it into place."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    target = local_path(weight, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(weight, root)
    if part.is_file() and part.stat().st_size > weight.size:
        part.unlink()
    held = part.stat().st_size if part.is_file() else 0

    def on_bytes(count: int) -> None:
        nonlocal held
        held += count
        counter.done += count
        counter.report(weight, "downloading", held)

    for attempt in range(retries + 1):
        if held >= weight.size:
            break
        try:
            held = receive(weight, part, held, settings, on_bytes)
        except FetchError as e:
            if e.kind == "mismatch":
                part.unlink(missing_ok=True)
            raise
        except OfflineModeIsEnabled as e:
            raise FetchError("offline", f"{e} (needed to download {weight.name})") from e
        except HfHubHTTPError as e:
            response = e.response
            url = str(response.request.url) if response is not None else weight.source.describe()
            raise status_error(weight, url, response.status_code if response is not None else 0) from e
        except TRANSPORT_ERRORS as e:
            held = part.stat().st_size if part.is_file() else 0
            failure = transport_error(weight, e, held, settings, target)
            if failure.kind == "offline" or attempt == retries:
                raise failure from e
            logger.warning("%s; retrying (%d of %d)", failure, attempt + 1, retries)
            time.sleep(retry_wait_s)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise FetchError(
                    "write", f"cannot write {part} ({e}): set {CHECKPOINTS_ENV} to a folder you can write to"
                ) from e
            raise FetchError(
                "disk_full",
                f"the disk holding {part.parent} filled up after {held:,} of {weight.size:,} bytes of "
                f"{weight.name}: free some space (or set {CHECKPOINTS_ENV} to a bigger disk) and run "
                f"`{fetch_command(weight)}` again; it resumes from the partial file",
            ) from e
    if held < weight.size:
        raise FetchError(
            "interrupted",
            f"the server ended {weight.name} after {held:,} of {weight.size:,} bytes; they are kept in a partial "
            f"file: run `{fetch_command(weight)}` again to resume",
        )
    hashed = 0

    def on_hashed(count: int) -> None:
        nonlocal hashed
        hashed += count
        counter.report(weight, "verifying", hashed)

    digest = sha256_file(part, on_hashed)
    if weight.sha256 is not None and digest != weight.sha256:
        part.unlink(missing_ok=True)
        raise FetchError(
            "mismatch",
            f"{weight.name}: the downloaded bytes have SHA-256 {digest}, the pin ({weight.source.describe()}) is "
            f"{weight.sha256}: the file was refused and deleted. The server did not send the file the publisher "
            "pinned; if you set HF_ENDPOINT, check that mirror",
        )
    if weight.sha256 is None:
        logger.warning("%s has no published SHA-256: recorded %s on this first download", weight.name, digest)
    os.replace(part, target)
    record_checked(weight, target, digest, root)
    return FetchResult(weight.name, target, "downloaded", digest)


def fetch(
    names: Iterable[str] = (),
    *,
    entries: Sequence[Weight] | None = None,
    root: Path | None = None,
    env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 60.0,
    retries: int = 2,
    retry_wait_s: float = 1.0,
) -> list[FetchResult]:
    """Download (or verify in place) registry entries.

    names: groups ("llm", "llm-small", "xtts", "sadtalker", "gfpgan", "all") or entry names; or
    entries: the Weight entries themselves (tests build their own).
    root: the checkpoints folder (default: $PERSONA_VIDEO_CHECKPOINTS or checkpoints/).
    env: where HF_ENDPOINT, HF_TOKEN and licence agreements are read (default os.environ).
    progress: called with a FetchProgress after every chunk downloaded or hashed.
    connect_timeout_s: how long to wait for a connection (an offline machine fails this fast).
    read_timeout_s: how long the server may send nothing before the download counts as stalled.
    retries: further attempts after a cut or a stall, each resuming from the partial file.
    Returns one FetchResult per entry, in order; raises FetchError (with the fix) on the first failure.
    """
    env = os.environ if env is None else env
    weights = list(entries) if entries is not None else resolve_names(names)
    root = root or checkpoints_dir()
    _check_agreements(weights, env)
    results: dict[str, FetchResult] = {}
    for weight in weights:
        present = _already_there(weight, root, env, progress)
        if present is not None:
            results[weight.name] = present
    todo = [w for w in weights if w.name not in results]
    if todo:
        try:
            (root / LOCKS_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FetchError(
                "write", f"cannot write to {root} ({e}): set {CHECKPOINTS_ENV} to a folder you can write to"
            ) from e
        _check_disk(todo, root)
    settings = TransferSettings(env, connect_timeout_s, read_timeout_s)
    counter = _Counter(sum(w.size for w in todo), sum(_part_size(w, root) for w in todo), progress)
    for weight in todo:
        with _entry_lock(weight, root):
            # Another process (the app's background fetch, a second `fetch`) may have finished it meanwhile.
            results[weight.name] = _recorded(weight, root, env) or _download(
                weight, root, settings, retries, retry_wait_s, counter
            )
    return [results[w.name] for w in weights]


def _entry_lock(weight: Weight, root: Path):
    """One download of an entry at a time, across processes: the others wait, then find it done."""
    from huggingface_hub.utils import WeakFileLock

    return WeakFileLock(root / LOCKS_DIR / f"{weight.name}.lock")


def _recorded(weight: Weight, root: Path, env: Mapping[str, str]) -> FetchResult | None:
    """The entry when it is on disk and its SHA-256 was recorded as matching (no hashing)."""
    found = find_weight(weight, root, env)
    recorded = checked_sha256(weight, found, root) if found is not None else None
    if found is None or recorded is None or found.stat().st_size != weight.size:
        return None
    if weight.sha256 is not None and recorded != weight.sha256:
        return None
    return FetchResult(weight.name, found, "present", recorded)
