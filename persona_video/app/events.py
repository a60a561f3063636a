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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from .. import pipeline
from ..errors import Cancelled, InputError, PersonaVideoError
from ..governor import GOVERNOR_FIELDS
from ..jobs.folder import Job
from ..personas import load_persona
from ..types import IntentTimingMap
from . import session as ui_session
from .content import persona_card
from .plot import intent_figure

logger = logging.getLogger(__name__)

#: Every output an event may update, in the order ui.py wires them.
OUTPUTS = ("status", "script", "audio", "plot", "video", "files", "stages", "auto", "job_id", "another", "live")
#: Governor controls in the order the sliders are wired: the checkbox, then GOVERNOR_FIELDS.
GOVERNOR_INPUTS = ("enabled", *GOVERNOR_FIELDS)
#: Stages in pipeline order, with what the status line says while each runs.
RUNNING: dict[str, str] = {
    "script": "Writing the script",
    "speech": "Speaking the script",
    "motion": "Generating head and face motion",
    "governor": "Applying the motion governor",
    "video": "Rendering and encoding the video",
}
STAGES = tuple(RUNNING)
#: Outputs that hold a run's results (repeated in its last update, so the API's answer has them all).
RESULTS = ("script", "audio", "plot", "video", "files")
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


def stage_table(rows: dict[str, tuple[str, float]], total_s: float | None = None) -> str:
    """A markdown table of each finished stage's backend and wall time."""
    if not rows:
        return ""
    lines = ["| Stage | Backend | Time |", "|---|---|---:|"]
    for stage in STAGES:
        if stage in rows:
            backend, seconds = rows[stage]
            lines.append(f"| {stage} | {backend} | {seconds:.2f} s |")
    if total_s is not None:
        lines.append(f"| **total** | | **{total_s:.2f} s** |")
    return "\n".join(lines)


def _auto_summary(picked: dict[str, str]) -> str:
    if not picked:
        return "What `auto` picked appears here after a run."
    parts = [f"{stage}: **{backend}**" for stage, backend in picked.items()]
    return "Last run used — " + " · ".join(parts)


def _status(text: str, notices: Iterable[str] = ()) -> str:
    lines = [text, *(f"> {notice}" for notice in notices if notice)]
    return "\n\n".join(lines)


def _error_status(message: str, notices: Iterable[str] = ()) -> str:
    return _status(f"**Error:** {message}", notices)


#: The live player shown while a run goes (its stream plays there), the finished one after it.
LIVE_PLAYER = {"live": gr.update(visible=True), "video": gr.update(value=None, visible=False)}
FINISHED_PLAYER = {"live": gr.update(visible=False), "video": gr.update(visible=True)}


def _failed(message: str, notices: Iterable[str] = (), rows: dict[str, tuple[str, float]] | None = None) -> dict:
    """The last update of a failed event: the message in the status line and a toast."""
    gr.Warning(message, title="Could not finish")
    update: dict[str, Any] = {"status": _error_status(message, notices), **FINISHED_PLAYER}
    if rows is not None:
        update["stages"] = stage_table(rows)
    return update


def _job_files(job_folder: Path) -> list[str]:
    return [str(job_folder / name) for name in ("video.mp4", "captions.vtt") if (job_folder / name).is_file()]


def _stream(
    events: Iterator[pipeline.StageEvent], rows: dict[str, tuple[str, float]], done: str = "Done"
) -> Iterator[dict]:
    """Updates for the page as each stage event arrives; errors become a message.

    rows: stage -> (backend, seconds) already known (a re-render's earlier stages);
    done: the status word at the end, followed by this run's own wall time.
    """
    from ..jobs.queue import PIPELINE_SLOT
    from ..jobs.remote import shared_broker_queue

    if shared_broker_queue() is not None:  # the job runs on a worker: nothing to wait for here
        yield from _stream_events(events, rows, done)
        return
    if not PIPELINE_SLOT.acquire(blocking=False):
        yield {"status": _status("**Waiting** for a job sent through the API to finish…")}
        PIPELINE_SLOT.acquire()
    try:
        yield from _stream_events(events, rows, done)
    finally:
        PIPELINE_SLOT.release()


def _stream_events(
    events: Iterator[pipeline.StageEvent], rows: dict[str, tuple[str, float]], done: str
) -> Iterator[dict]:
    ran_s = 0.0
    shown: dict[str, Any] = {}  # every result sent so far: the last update repeats them for API clients
    notices: list[str] = []
    picked: dict[str, str] = {}
    timing: IntentTimingMap | None = None
    job_folder: Path | None = None
    try:
        for event in events:
            if event.stage == "queued":  # waiting for a worker (broker)
                yield {"status": _status(f"**Waiting** for a worker: {event.notice}…"), "job_id": event.job_id}
                continue
            update: dict[str, Any] = {"job_id": event.job_id}
            if event.stage == "script_draft":
                written = len(event.result.sentences)
                text = f"**Writing the script** with the {event.backend} model… {written} sentences so far"
                yield {"job_id": event.job_id, "script": event.result.text, "status": _status(text, notices)}
                continue
            if event.stage == "chunk":
                segment = event.result
                drawing = f" sentence {segment.sentence} of {segment.sentences}" if segment.sentence else ""
                text = f"**Playing** while drawing{drawing}…"
                yield {"job_id": event.job_id, "live": str(segment.path), "status": _status(text, notices)}
                continue
            if event.notice and event.notice not in notices:
                notices.append(event.notice)
            if event.stage == "script" and event.result.model:
                rows["script"] = (f"{event.backend} ({event.result.model})", event.seconds)
                ran_s += event.seconds
                picked["script"] = event.backend
            elif event.stage in RUNNING:
                rows[event.stage] = (event.backend, event.seconds)
                ran_s += event.seconds
                picked[event.stage] = event.backend
            if event.stage == "script":
                update["script"] = event.result.markup
            elif event.stage == "speech":
                timing = event.result.timing
                picked["speech"] = f"{event.backend} ({event.result.voice})"
                update["audio"] = str(_folder_of(event.job_id) / "audio.wav")
                # the audio goes out first: it is playable before the plot is drawn
                shown["audio"] = update.pop("audio")
                yield {"audio": shown["audio"], "job_id": event.job_id}
                update["plot"] = intent_figure(timing)
            elif event.stage == "governor":
                _governed, gains, _config = event.result
                if timing is None:
                    timing = IntentTimingMap.from_dict(Job.open(event.job_id).read_json("timing.json"))
                update["plot"] = intent_figure(timing, gains)
            elif event.stage == "video":
                job_folder = Path(event.result).parent
                # the finished MP4, with its download and captions, takes over from the live player
                update["video"] = gr.update(value=str(event.result), visible=True)
                update["files"] = _job_files(job_folder)
            if event.stage == "done":
                total_s = sum(seconds for _backend, seconds in rows.values())
                update["stages"] = stage_table(rows, total_s)
                update["status"] = _status(f"**{done}** in {ran_s:.2f} s (job `{event.job_id}`)", notices)
                update["another"] = gr.update(visible=True)
                update["live"] = gr.update(visible=False)
                update = {**shown, **update}
            else:
                update["stages"] = stage_table(rows)
                following = STAGES[STAGES.index(event.stage) + 1] if event.stage != STAGES[-1] else None
                text = f"**{RUNNING[following]}…**" if following else "**Finishing…**"
                update["status"] = _status(text, notices)
            update["auto"] = _auto_summary(picked)
            shown.update((k, v) for k, v in update.items() if k in RESULTS)
            if event.stage == "video":
                shown["video"] = str(event.result)  # the last update gives API clients the file itself
            yield update
    except Cancelled as e:
        logger.info("run cancelled: %s", e)
        yield {"status": _status(f"**Cancelled:** {e} (a new run replaced it)", notices), "stages": stage_table(rows)}
    except PersonaVideoError as e:
        logger.info("request failed: %s", e)
        yield _failed(str(e), notices, rows)
    except Exception as e:  # a bug, not the user's doing: traceback to the log, one line to the page
        logger.exception("request failed unexpectedly")
        message = f"unexpected {type(e).__name__}: {e} (the server log has the details)"
        yield _failed(message, notices, rows)


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


def _folder_of(job_id: str) -> Path:
    return Job.open(job_id).folder


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
        "status": _status(f"**{RUNNING[first]}…**"),
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
    yield {**_start("script"), "script": "", "job_id": None}
    try:
        pipeline_request = build_request(
            persona_id, prompt, portrait, reference_wav, temperature, max_tokens, seed, voice,
            script_backend, speech_backend, motion_backend, enhancer, framing, still,
            governor_overrides(*governor),
        )  # fmt: skip
        cancel = ui_session.register_run(request_session)
        events = _generation(pipeline_request, cancel)
    except PersonaVideoError as e:
        yield _failed(str(e))
        return
    try:
        yield from _stream(events, {})
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
        yield _failed(str(e))
        return
    yield from _stream(events, {})


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
        yield _failed(str(e))
        return
    yield {"status": _status(f"**{RUNNING['governor']}…**"), **LIVE_PLAYER}
    yield from _stream(events, rows, done="Re-rendered")


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
