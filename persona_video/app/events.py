"""The app's event functions, free of layout so tests can call them directly.

Each streaming event is a generator of *updates*: dicts from an output name
(see :data:`OUTPUTS`) to its new value; names left out stay as they are. The
app (``ui.py``) turns them into Gradio outputs.

With PERSONA_VIDEO_BROKER set, the events queue their job on the broker and
follow it as a worker runs it (``remote_queue.BrokerQueue.follow``); otherwise
they run the pipeline here, one at a time.

A :class:`PersonaVideoError` ends the event normally with the message in the
status line (``**Error:** ...``) and a warning toast: raising ``gr.Error``
would cover every output with an error badge, hiding the stages that did
finish. The REST API is the surface that answers with error statuses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr

from .. import pipeline
from ..errors import InputError, PersonaVideoError
from ..governor import GOVERNOR_FIELDS
from ..jobs.folder import Job
from ..personas import load_persona
from . import session as ui_session
from .content import persona_card
from .updates import LIVE_PLAYER, RUNNING, STAGES, failed_update, page_updates, status_line  # noqa: F401  (STAGES)

logger = logging.getLogger(__name__)

#: Every output an event may update, in the order ui.py wires them.
OUTPUTS = ("status", "script", "audio", "plot", "video", "files", "stages", "auto", "job_id", "another", "live")
#: Governor controls in the order the sliders are wired: the checkbox, then GOVERNOR_FIELDS.
GOVERNOR_INPUTS = ("enabled", *GOVERNOR_FIELDS)
AUTO = "auto"


def persona_defaults(persona_id: str) -> tuple:
    """The persona's card, temperature, max tokens and governor defaults, in slider order."""
    try:
        persona = load_persona(persona_id)
    except PersonaVideoError as e:
        raise gr.Error(str(e), print_exception=False) from e
    config = persona.governor_config().to_dict()
    return (
        persona_card(persona_id),
        persona.script.temperature,
        persona.script.max_tokens,
        *(config[name] for name in GOVERNOR_INPUTS),
    )


def governor_overrides(*values: Any) -> dict[str, Any]:
    """Slider values (in GOVERNOR_INPUTS order) as a governor dict for a Request."""
    if len(values) != len(GOVERNOR_INPUTS):
        raise InputError(f"expected {len(GOVERNOR_INPUTS)} governor values ({', '.join(GOVERNOR_INPUTS)})")
    out: dict[str, Any] = {"enabled": bool(values[0])}
    for name, value in zip(GOVERNOR_INPUTS[1:], values[1:], strict=True):
        out[name] = float(value)
    return out


def _generation(request: pipeline.Request, cancel: threading.Event | None = None) -> Iterator[pipeline.StageEvent]:
    """The events of a new job: queued on the broker and followed (PERSONA_VIDEO_BROKER set), or run here.
    cancel stops a job run here (a worker's job runs to its end)."""
    from ..jobs.remote import shared_broker_queue

    queue = shared_broker_queue()
    if queue is None:
        yield from pipeline.run(request, cancel=cancel)
        return
    queue.check(request)
    yield from queue.follow(queue.submit_generate(request))


def _rerendering(job_id: str, overrides: dict[str, Any]) -> Iterator[pipeline.StageEvent]:
    """The events of a re-render, run here or queued on the broker like `_generation`."""
    from ..jobs.remote import shared_broker_queue

    queue = shared_broker_queue()
    if queue is None:
        yield from pipeline.rerender(job_id, overrides)
        return
    job = Job.open(job_id)
    if job.manifest.get("state") in ("queued", "running"):
        raise InputError(f"job {job_id} is still {job.manifest['state']}: wait for it to finish, then re-render")
    yield from queue.follow(queue.submit_rerender(job_id, overrides))


def _clean(value: Any) -> Any:
    """Empty form values (blank text, cleared uploads, 'auto' voice) mean 'the persona's'."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


def build_request(
    persona_id: str,
    prompt: str | None,
    portrait: str | None = None,
    reference_wav: str | None = None,
    temperature: float | None = None,
    max_tokens: float | None = None,
    seed: float | None = 0,
    voice: str = AUTO,
    script_backend: str = AUTO,
    speech_backend: str = AUTO,
    motion_backend: str = AUTO,
    enhancer: str = AUTO,
    framing: str = "crop",
    still: bool = False,
    governor: dict[str, Any] | None = None,
    script: str | None = None,
) -> pipeline.Request:
    """A pipeline Request from the page's form values (blank means the persona's value)."""
    return pipeline.Request(
        persona=persona_id,
        prompt=None if script is not None else (prompt if prompt is not None else ""),
        script=script,
        temperature=None if temperature is None else float(temperature),
        max_tokens=None if max_tokens is None else int(max_tokens),
        seed=int(seed or 0),
        voice=None if voice in (None, AUTO) else voice,
        script_backend=script_backend or AUTO,
        speech_backend=speech_backend or AUTO,
        motion_backend=motion_backend or AUTO,
        enhancer=enhancer or AUTO,
        portrait=_clean(portrait),
        reference_wav=_clean(reference_wav),
        framing=framing or "crop",
        still=bool(still),
        governor=governor or {},
    )


def _start(first: str) -> dict[str, Any]:
    """The first update of a run: clear the previous result, name the first stage."""
    return {
        "status": status_line(f"**{RUNNING[first]}…**"),
        "audio": None,
        "plot": None,
        **LIVE_PLAYER,
        "files": None,
        "stages": "",
        "another": gr.update(visible=False),
    }


def generate(
    persona_id: str,
    prompt: str,
    portrait: str | None,
    reference_wav: str | None,
    temperature: float,
    max_tokens: float,
    seed: float,
    voice: str,
    script_backend: str,
    speech_backend: str,
    motion_backend: str,
    enhancer: str,
    framing: str,
    still: bool,
    enabled: bool,
    pause_gain: float,
    neutral_gain: float,
    emphasis_gain: float,
    expression_clamp_sigma: float,
    pose_smoothing_s: float,
    request: gr.Request | None = None,
) -> Iterator[dict]:
    """Prompt -> script, audio, plot, video, streamed as each stage finishes.

    The last seven inputs are the governor controls (GOVERNOR_INPUTS order); Gradio
    passes ``request``, whose session a new Generate uses to cancel this run.
    """
    governor = (enabled, pause_gain, neutral_gain, emphasis_gain, expression_clamp_sigma, pose_smoothing_s)
    request_session = ui_session.session_of(request)
    # counted before the form is checked: every Generate starts a run, even one that fails at once
    cancel = ui_session.register_run(request_session)
    try:
        yield {**_start("script"), "script": "", "job_id": None}
        try:
            pipeline_request = build_request(
                persona_id, prompt, portrait, reference_wav, temperature, max_tokens, seed, voice,
                script_backend, speech_backend, motion_backend, enhancer, framing, still,
                governor_overrides(*governor),
            )  # fmt: skip
            events = _generation(pipeline_request, cancel)
        except PersonaVideoError as e:
            yield failed_update(str(e))
            return
        yield from page_updates(events, {})
    finally:
        ui_session.forget_run(request_session, cancel)


def speak_edited(job_id: str | None, script_text: str, persona_id: str) -> Iterator[dict]:
    """Re-run from speech with the edited script (a new job), or speak a pasted
    script with the selected persona when nothing was generated yet."""
    yield _start("script")
    try:
        if not isinstance(script_text, str) or not script_text.strip():
            raise InputError("the script box is empty: generate a script or type one, then press Speak")
        if job_id:
            events = _generation(pipeline.speak_script_request(job_id, script_text))
        else:
            events = _generation(build_request(persona_id, None, script=script_text))
    except PersonaVideoError as e:
        yield failed_update(str(e))
        return
    yield from page_updates(events, {})


def rerender(
    job_id: str | None,
    enabled: bool,
    pause_gain: float,
    neutral_gain: float,
    emphasis_gain: float,
    expression_clamp_sigma: float,
    pose_smoothing_s: float,
) -> Iterator[dict]:
    """New governor settings on the current job: governor, render and encode only."""
    governor = (enabled, pause_gain, neutral_gain, emphasis_gain, expression_clamp_sigma, pose_smoothing_s)
    try:
        if not job_id:
            raise InputError("nothing to re-render yet: generate a video first")
        job = Job.open(job_id)
        overrides = governor_overrides(*governor)
        rows = {
            stage: (info.get("backend", ""), float(info.get("seconds", 0.0)))
            for stage, info in job.manifest.get("stages", {}).items()
            if stage in ("script", "speech", "motion")
        }
        events = _rerendering(job_id, overrides)
    except PersonaVideoError as e:
        yield failed_update(str(e))
        return
    yield {"status": status_line(f"**{RUNNING['governor']}…**"), **LIVE_PLAYER}
    yield from page_updates(events, rows, done="Re-rendered")


def reset() -> dict[str, Any]:
    """The "Generate another" button: a clean page, the persona and settings kept."""
    return {
        "status": "Pick a persona, type a prompt and press **Generate**.",
        "script": "",
        "audio": None,
        "plot": None,
        "video": gr.update(value=None, visible=True),
        "live": gr.update(visible=False),
        "files": None,
        "stages": "",
        "job_id": None,
        "another": gr.update(visible=False),
        "prompt": "",
    }
