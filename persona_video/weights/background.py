"""What the app needs at start: which script model is here, whether to fetch it, and a fetch it can poll.

``local_llm_path()`` is the GGUF the local script writer loads; ``should_autofetch()``
says whether ``./run.sh`` should download the default one on this start;
``start_background_fetch()`` does that in a thread whose ``state``, ``fraction``
and ``message`` the page polls ("downloading the script model, 43 %").
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from persona_video.errors import BackendUnavailable, FetchError
from persona_video.weights.catalog import GROUP_LABELS, Weight
from persona_video.weights.fetch import FetchProgress, FetchResult, fetch
from persona_video.weights.registry import WEIGHTS, find_weight, local_path, resolve_names

logger = logging.getLogger(__name__)

#: Environment variable with the path of a GGUF the local script writer should load instead.
LLM_GGUF_ENV = "PERSONA_VIDEO_LLM_GGUF"
#: Environment variable that turns off the first-start download of the script model ("0").
AUTOFETCH_ENV = "PERSONA_VIDEO_FETCH"


def _present(weight: Weight, root: Path | None, env: Mapping[str, str]) -> Path | None:
    found = find_weight(weight, root, env)
    return found if found is not None and found.stat().st_size == weight.size else None


def local_llm_path(env: Mapping[str, str] | None = None, root: Path | None = None) -> Path | None:
    """The GGUF the local script writer loads, or None when there is none.

    In order: $PERSONA_VIDEO_LLM_GGUF (BackendUnavailable naming the variable when that
    file does not exist); the registered ``llm`` file, present and of its pinned size
    (checkpoints folder or Hub cache); the same for ``llm_small``; the first other
    ``*.gguf`` under ``checkpoints/llm/`` (by name); else None.
    """
    env = os.environ if env is None else env
    chosen = env.get(LLM_GGUF_ENV, "").strip()
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise BackendUnavailable(
                f"{LLM_GGUF_ENV}={chosen} does not exist: point it at a .gguf file, or unset it to use "
                "the registered model (python -m persona_video fetch llm)"
            )
        return path
    for name in ("llm", "llm_small"):
        found = _present(WEIGHTS[name], root, env)
        if found is not None:
            return found
    folder = local_path(WEIGHTS["llm"], root).parent
    others = sorted(p for p in folder.glob("*.gguf") if p.is_file() and not p.name.startswith("."))
    return others[0] if others else None


def should_autofetch(env: Mapping[str, str] | None = None, root: Path | None = None) -> bool:
    """True when this start should download the default script model in the background:
    $PERSONA_VIDEO_FETCH is not "0" and no script model is here (nor chosen by path)."""
    env = os.environ if env is None else env
    if env.get(AUTOFETCH_ENV, "").strip() == "0" or env.get(LLM_GGUF_ENV, "").strip():
        return False
    return local_llm_path(env, root) is None


def group_label(weights: Iterable[Weight]) -> str:
    """How the page names what is downloading: "the script model", or "the model files" for several groups."""
    groups = list(dict.fromkeys(w.group for w in weights))
    return GROUP_LABELS.get(groups[0], groups[0]) if len(groups) == 1 else "the model files"


class BackgroundFetch:
    """A fetch running in a daemon thread; every property is safe to read from any thread.

    state: "downloading" | "done" | "failed" | "offline".
    fraction: 0..1 of the bytes to download. message: one line for the page.
    """

    def __init__(self, names: Iterable[str] = (), *, entries: Sequence[Weight] | None = None, **fetch_options) -> None:
        self._weights = list(entries) if entries is not None else resolve_names(names)
        self._label = group_label(self._weights)
        self._options = fetch_options
        self._lock = threading.Lock()
        self._state = "downloading"
        self._fraction = 0.0
        self._message = f"downloading {self._label}, 0 %"
        self._error: FetchError | None = None
        self._results: list[FetchResult] = []
        self._thread = threading.Thread(target=self._run, name="persona-video-fetch", daemon=True)

    def start(self) -> BackgroundFetch:
        self._thread.start()
        return self

    def _on_progress(self, progress: FetchProgress) -> None:
        with self._lock:
            if progress.phase == "verifying":
                share = progress.file_done / progress.file_total if progress.file_total else 1.0
                self._message = f"checking {self._label}, {int(share * 100)} %"
            else:
                self._fraction = progress.fraction
                self._message = f"downloading {self._label}, {int(progress.fraction * 100)} %"

    def _run(self) -> None:
        try:
            results = fetch(entries=self._weights, progress=self._on_progress, **self._options)
        except FetchError as e:
            logger.warning("background fetch of %s failed: %s", self._label, e)
            with self._lock:
                self._state = "offline" if e.kind == "offline" else "failed"
                self._message = str(e)
                self._error = e
            return
        except Exception as e:  # a thread has no caller to raise to: keep it for the page, and log it
            logger.exception("background fetch of %s failed", self._label)
            with self._lock:
                self._state = "failed"
                self._message = f"downloading {self._label} failed: {type(e).__name__}: {e}"
            return
        with self._lock:
            self._state, self._fraction, self._results = "done", 1.0, results
            self._message = f"{self._label} is ready"

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    @property
    def fraction(self) -> float:
        with self._lock:
            return self._fraction

    @property
    def message(self) -> str:
        with self._lock:
            return self._message

    @property
    def error(self) -> FetchError | None:
        with self._lock:
            return self._error

    @property
    def results(self) -> list[FetchResult]:
        with self._lock:
            return list(self._results)

    def snapshot(self) -> dict:
        """state, fraction and message read together (one consistent view for a poll)."""
        with self._lock:
            return {"state": self._state, "fraction": self._fraction, "message": self._message}

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the fetch ends or ``timeout_s`` passes; True when it has ended."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


def start_background_fetch(
    names: Iterable[str] = ("llm",), *, entries: Sequence[Weight] | None = None, **fetch_options
) -> BackgroundFetch:
    """Start fetching ``names`` (groups or entry names; or ``entries`` themselves) in a daemon
    thread and return the handle to poll.

    fetch_options go to ``fetch`` (root, env, timeouts, retries). Unknown names raise
    InputError here, before any thread starts.
    """
    return BackgroundFetch(names, entries=entries, **fetch_options).start()


_SCRIPT_MODEL_FETCH: BackgroundFetch | None = None
_SCRIPT_MODEL_LOCK = threading.Lock()


def autofetch_script_model(env: Mapping[str, str] | None = None) -> BackgroundFetch | None:
    """At server start: fetch the default script model in the background when it is missing
    and PERSONA_VIDEO_FETCH is not 0 (once per process). The handle, or None when nothing
    needs fetching; ``script_model_fetch()`` gives it to the page."""
    global _SCRIPT_MODEL_FETCH
    with _SCRIPT_MODEL_LOCK:
        if _SCRIPT_MODEL_FETCH is None and should_autofetch(env):
            _SCRIPT_MODEL_FETCH = start_background_fetch(["llm"])
        return _SCRIPT_MODEL_FETCH


def script_model_fetch() -> BackgroundFetch | None:
    """The background fetch of the script model this process started, if any."""
    return _SCRIPT_MODEL_FETCH
