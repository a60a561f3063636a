"""Pipeline events as page updates: each stage event becomes a dict from an output name (see
``events.OUTPUTS``) to its new value, with the status line, the stage table, the live player and
the finished video; a PersonaVideoError becomes a message in the status line and a toast."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from .. import pipeline
from ..errors import Cancelled, PersonaVideoError
from ..jobs.folder import Job
from ..types import IntentTimingMap
from .plot import intent_figure

logger = logging.getLogger(__name__)

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


def status_line(text: str, notices: Iterable[str] = ()) -> str:
    lines = [text, *(f"> {notice}" for notice in notices if notice)]
    return "\n\n".join(lines)


def _error_status(message: str, notices: Iterable[str] = ()) -> str:
    return status_line(f"**Error:** {message}", notices)


#: The live player shown while a run goes (its stream plays there), the finished one after it.
LIVE_PLAYER = {"live": gr.update(visible=True), "video": gr.update(value=None, visible=False)}
FINISHED_PLAYER = {"live": gr.update(visible=False), "video": gr.update(visible=True)}


def failed_update(message: str, notices: Iterable[str] = (), rows: dict[str, tuple[str, float]] | None = None) -> dict:
    """The last update of a failed event: the message in the status line and a toast."""
    gr.Warning(message, title="Could not finish")
    update: dict[str, Any] = {"status": _error_status(message, notices), **FINISHED_PLAYER}
    if rows is not None:
        update["stages"] = stage_table(rows)
    return update


def _job_files(job_folder: Path) -> list[str]:
    return [str(job_folder / name) for name in ("video.mp4", "captions.vtt") if (job_folder / name).is_file()]


def _folder_of(job_id: str) -> Path:
    return Job.open(job_id).folder


def page_updates(
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
        yield {"status": status_line("**Waiting** for a job sent through the API to finish…")}
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
    script_written = False
    try:
        for event in events:
            script_written = script_written or event.stage == "script"
            if event.stage == "queued":  # waiting for a worker (broker)
                yield {"status": status_line(f"**Waiting** for a worker: {event.notice}…"), "job_id": event.job_id}
                continue
            update: dict[str, Any] = {"job_id": event.job_id}
            if event.stage == "script_draft":
                written = len(event.result.sentences)
                text = f"**Writing the script** with the {event.backend} model… {written} sentences so far"
                yield {"job_id": event.job_id, "script": event.result.text, "status": status_line(text, notices)}
                continue
            if event.stage == "chunk":
                segment = event.result
                so_far = "" if script_written else " so far"  # the model is still writing
                drawing = f" sentence {segment.sentence} of {segment.sentences}{so_far}" if segment.sentence else ""
                text = f"**Playing** while drawing{drawing}…"
                yield {"job_id": event.job_id, "live": str(segment.path), "status": status_line(text, notices)}
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
                update["status"] = status_line(f"**{done}** in {ran_s:.2f} s (job `{event.job_id}`)", notices)
                update["another"] = gr.update(visible=True)
                update["live"] = gr.update(visible=False)
                update = {**shown, **update}
            else:
                update["stages"] = stage_table(rows)
                following = STAGES[STAGES.index(event.stage) + 1] if event.stage != STAGES[-1] else None
                text = f"**{RUNNING[following]}…**" if following else "**Finishing…**"
                update["status"] = status_line(text, notices)
            update["auto"] = _auto_summary(picked)
            shown.update((k, v) for k, v in update.items() if k in RESULTS)
            if event.stage == "video":
                shown["video"] = str(event.result)  # the last update gives API clients the file itself
            yield update
    except Cancelled as e:
        logger.info("run cancelled: %s", e)
        yield {
            "status": status_line(f"**Cancelled:** {e} (a new run replaced it)", notices),
            "stages": stage_table(rows),
        }
    except PersonaVideoError as e:
        logger.info("request failed: %s", e)
        yield failed_update(str(e), notices, rows)
    except Exception as e:  # a bug, not the user's doing: traceback to the log, one line to the page
        logger.exception("request failed unexpectedly")
        message = f"unexpected {type(e).__name__}: {e} (the server log has the details)"
        yield failed_update(message, notices, rows)
