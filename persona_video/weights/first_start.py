"""A deployment's first start: fetch the missing heavy weights into the (persistent) checkpoints
folder in the background, with their progress in the log and on the page, while the app already
answers. The Docker image sets ``PERSONA_VIDEO_FETCH_ON_START="xtts sadtalker gfpgan"``.

XTTS v2's licence (Coqui Public Model License) asks for explicit agreement: it is fetched only
with ``COQUI_TOS_AGREED=1`` (as ``fetch`` itself requires); without it the rest still comes and
the page says how to agree. The default script model has its own first-start fetch
(``background.autofetch_script_model``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from persona_video.weights.background import BackgroundFetch, start_background_fetch
from persona_video.weights.catalog import GROUP_LABELS, Weight
from persona_video.weights.registry import find_weight, resolve_names

logger = logging.getLogger(__name__)

#: Groups to fetch at server start when missing, separated by spaces or commas; unset: none.
FETCH_ON_START_ENV = "PERSONA_VIDEO_FETCH_ON_START"
#: Seconds between progress lines in the log.
LOG_EVERY_S = 10.0

_FETCH: BackgroundFetch | None = None
_HELD_BACK: dict[str, str] = {}
_LOCK = threading.Lock()


def _missing(weights: list[Weight], env: Mapping[str, str]) -> list[Weight]:
    present = (find_weight(w, env=env) for w in weights)
    return [w for w, path in zip(weights, present, strict=True) if path is None or path.stat().st_size != w.size]


def _log_progress(fetching: BackgroundFetch) -> None:
    while not fetching.wait(LOG_EVERY_S):
        logger.info("first start: %s", fetching.message)
    logger.info("first start: %s (%s)", fetching.message, fetching.state)


def fetch_on_start(env: Mapping[str, str] | None = None, **fetch_options) -> BackgroundFetch | None:
    """At server start: fetch, in a background thread, the missing files of the groups named in
    PERSONA_VIDEO_FETCH_ON_START (once per process). Returns the handle, or None when nothing is
    missing or nothing is asked for. Unknown group names raise InputError here.

    fetch_options go to ``fetch`` (root, timeouts, retries)."""
    global _FETCH
    env = os.environ if env is None else env
    names = env.get(FETCH_ON_START_ENV, "").replace(",", " ").split()
    with _LOCK:
        if _FETCH is not None or not names:
            return _FETCH
        wanted = _missing(resolve_names(names), env)
        for weight in wanted:
            if weight.agreement_env and env.get(weight.agreement_env, "").strip() != "1":
                label = GROUP_LABELS.get(weight.group, weight.group)
                _HELD_BACK[weight.group] = (
                    f"{label} is not downloaded: its licence ({weight.licence}) asks for agreement, "
                    f"set {weight.agreement_env}=1 to accept it ({weight.licence_url})"
                )
        for reason in _HELD_BACK.values():
            logger.warning("first start: %s", reason)
        wanted = [w for w in wanted if w.group not in _HELD_BACK]
        if not wanted:
            return None
        total_gb = sum(w.size for w in wanted) / 1e9
        logger.info(
            "first start: fetching %d missing file(s), %.2f GB, into the checkpoints folder", len(wanted), total_gb
        )
        _FETCH = start_background_fetch(entries=wanted, env=env, **fetch_options)
        threading.Thread(target=_log_progress, args=(_FETCH,), name="fetch-log", daemon=True).start()
        return _FETCH


def first_start_fetch() -> BackgroundFetch | None:
    """The first-start fetch this process started, if any."""
    return _FETCH


def held_back() -> list[str]:
    """Why a group asked for was not fetched (a licence not agreed to), one line each."""
    return list(_HELD_BACK.values())


def status() -> dict:
    """For the page and /api/health: state ("idle" | "downloading" | "done" | "failed" | "offline"),
    fraction 0..1, message, and held_back (lines)."""
    fetching = _FETCH
    snapshot = fetching.snapshot() if fetching is not None else {"state": "idle", "fraction": 0.0, "message": ""}
    return {**snapshot, "held_back": held_back()}
