"""What the page keeps per browser session and shows beside the form: the running
generation that a new Generate cancels, and the line that says who writes the
scripts here (with the script model's download while it runs)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import gradio as gr

from ..errors import PersonaVideoError

logger = logging.getLogger(__name__)

#: The page's running generations by browser session: (the number of the Generate that started
#: it, its cancel). A new Generate cancels the session's run that an earlier Generate started.
_RUNS: dict[str, tuple[int, threading.Event]] = {}
#: Per session: Generates whose run has started, and Generates whose cancel request has arrived.
#: A click sends both requests at once, and nothing makes the cancel arrive first; the clock used
#: before ("a run younger than 0.5 s is the click's own") cancelled a click's own run whenever its
#: cancel came later than that (tested), so clicks and runs are counted instead.
_STARTED: dict[str, int] = {}
_CLICKS: dict[str, int] = {}
_RUNS_LOCK = threading.Lock()


def session_of(request: gr.Request | None) -> str:
    return str(getattr(request, "session_hash", None) or "")


def register_run(session: str) -> threading.Event:
    """A Generate's run starts: its cancel, which a later Generate of the session sets."""
    cancel = threading.Event()
    if session:
        with _RUNS_LOCK:
            _STARTED[session] = number = _STARTED.get(session, 0) + 1
            _RUNS[session] = (number, cancel)
    return cancel


def forget_run(session: str, cancel: threading.Event) -> None:
    with _RUNS_LOCK:
        if session and session in _RUNS and _RUNS[session][1] is cancel:
            del _RUNS[session]


def cancel_previous(request: gr.Request | None = None) -> None:
    """On Generate: stop this browser session's run that is still going, if an earlier Generate
    started it (its finished stages stay in its job folder; its manifest says "cancelled")."""
    session = session_of(request)
    if not session:
        return
    with _RUNS_LOCK:
        _CLICKS[session] = click = _CLICKS.get(session, 0) + 1
        number, cancel = _RUNS.get(session, (0, None))
    if cancel is not None and number < click:
        logger.info("a new Generate cancels the running job of session %s", session[:8])
        cancel.set()


def cancel_on_close(request: gr.Request | None = None) -> None:
    """The page was closed (or reloaded): its running job stops before its next chunk; what it
    finished stays in its job folder, and its manifest says "cancelled"."""
    session = session_of(request)
    with _RUNS_LOCK:
        _number, cancel = _RUNS.get(session, (0, None))
        _STARTED.pop(session, None)
        _CLICKS.pop(session, None)
    if cancel is not None:
        logger.info("the page of session %s closed: its running job is cancelled", session[:8])
        cancel.set()


def script_writer_status() -> tuple[str, Any]:
    """The line above the prompt that says who writes scripts here, and the timer's state:
    while the script model downloads it shows the progress (the timer keeps polling), then
    which writer ``auto`` picks (the timer stops)."""
    from ..script import GET_A_MODEL, plan_writer
    from ..weights.background import script_model_fetch

    fetching = script_model_fetch()
    snapshot = fetching.snapshot() if fetching is not None else None
    if snapshot is not None and snapshot["state"] == "downloading":
        text = f"**Script model:** {snapshot['message']} — until it is done, scripts are templates."
        return text, gr.Timer(active=True)
    try:
        plan = plan_writer("auto")
    except PersonaVideoError as e:
        return f"**Script writer:** {e}", gr.Timer(active=False)
    if plan.name == "offline":
        failed = ""
        if snapshot is not None and snapshot["state"] in ("failed", "offline"):
            failed = f"The script model could not be downloaded ({snapshot['message']}). "
        text = f"**Script writer: template.** {failed}Scripts here know nothing about the topic. {GET_A_MODEL}"
    else:
        model = f" ({plan.model})" if plan.model else ""
        text = f"**Script writer:** **{plan.name}**{model}."
    return text, gr.Timer(active=False)
