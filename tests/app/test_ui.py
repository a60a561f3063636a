"""The app's event functions, called directly on the real pipeline (real voice,
face mesh, ffmpeg): streaming order, re-render reusing the job, the edited
script honoured, errors shown as messages, and the page's wiring."""

from __future__ import annotations

import hashlib
import re
import time
import warnings
import wave
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from matplotlib.figure import Figure

from persona_video.app import content as ui_content
from persona_video.app import events as ui_events
from persona_video.app import session as ui_session
from persona_video.jobs.folder import Job
from persona_video.personas import load_persona
from persona_video.script import parse_markup
from persona_video.types import IntentTimingMap, SegmentSpan, split_sentences

SHORT_SCRIPT = "So, [pause 0.4] this little box is *seriously* fast. Worth it."


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSONA_VIDEO_OUTPUTS", str(folder))
        yield folder


def governor_values(persona_id: str = "mkbhd", **changes: float) -> list:
    config = {**load_persona(persona_id).governor_config().to_dict(), **changes}
    return [config[name] for name in ui_events.GOVERNOR_INPUTS]


def form(persona_id: str = "mkbhd", prompt: str = "Explain the M4 Mac Mini", **changes) -> list:
    """The Generate button's inputs, in the order the page wires them."""
    values = {
        "persona_id": persona_id,
        "prompt": prompt,
        "portrait": None,
        "reference_wav": None,
        "temperature": 0.6,
        "max_tokens": 60,
        "seed": 0,
        "voice": "auto",
        "script_backend": "auto",
        "speech_backend": "auto",
        "motion_backend": "auto",
        "enhancer": "auto",
        "framing": "crop",
        "still": False,
    }
    values.update(changes)
    return [*values.values(), *governor_values(persona_id)]


def drain(events) -> tuple[list[dict], str | None]:
    """All updates of an event, and its error message: shown in the status line
    and raised as a warning toast (both must carry it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        updates = list(events)
    toasts = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    status = updates[-1].get("status", "") if updates else ""
    if not status.startswith("**Error:**"):
        assert not toasts, toasts
        return updates, None
    message = status.removeprefix("**Error:** ").split("\n\n")[0]
    assert message in toasts and "Traceback" not in status
    return updates, message


def value_of(update):
    """An output's new value: the value itself, or the one a gr.update carries (None when it
    only changes a property, such as the finished player shown in place of the live one)."""
    return update.get("value") if isinstance(update, dict) else update


def first_index(updates: list[dict], name: str) -> int:
    return next(i for i, u in enumerate(updates) if value_of(u.get(name)) not in (None, ""))


def last(updates: list[dict], name: str):
    return [value_of(u[name]) for u in updates if name in u and value_of(u[name]) is not None][-1]


@pytest.fixture(scope="module")
def generated(outputs: Path) -> list[dict]:
    updates, error = drain(ui_events.generate(*form()))
    assert error is None, error
    return updates


def test_generate_streams_script_audio_plot_video_in_order(generated: list[dict]) -> None:
    order = [first_index(generated, name) for name in ("script", "audio", "plot", "video")]
    assert order == sorted(order) and len(set(order)) == 4
    assert "Writing the script" in generated[0]["status"]
    # the status names the next running stage while the run is under way
    assert "Speaking" in generated[first_index(generated, "script")]["status"]
    script = last(generated, "script")
    assert "*" in script or "[pause" in script  # canonical markup, not bare text
    audio_path = Path(last(generated, "audio"))
    with wave.open(str(audio_path)) as wav:
        assert wav.getnframes() / wav.getframerate() > 1.0
    video_path = Path(last(generated, "video"))
    assert video_path.read_bytes()[4:8] == b"ftyp"
    assert any(p.endswith("captions.vtt") for p in last(generated, "files"))
    final = generated[-1]
    assert "Done" in final["status"] and "total" in final["stages"]
    for stage in ui_events.STAGES:
        assert f"| {stage} |" in final["stages"]
    assert "speech: **hibari (heart)**" in final["auto"] or "speech: **piper" in final["auto"]
    # while it plays, the status says which sentence is being drawn of the script's (the template's
    # script is whole at once: no "so far")
    playing = [u["status"] for u in generated if "Playing" in u.get("status", "")]
    drawn = [re.search(r"drawing sentence (\d+) of (\d+)…", text) for text in playing]
    assert playing and all(drawn) and "so far" not in " ".join(playing)
    assert {int(m.group(2)) for m in drawn} == {len(split_sentences(parse_markup(script)))}
    # the plot gets the gain curve once the governor has run
    plots = [u["plot"] for u in generated if isinstance(u.get("plot"), Figure)]
    assert len(plots[0].axes[0].lines) == 1 and len(plots[-1].axes[0].lines) == 2


def test_rerender_reuses_the_job_and_replaces_the_video(generated: list[dict]) -> None:
    job_id = last(generated, "job_id")
    folder = Job.open(job_id).folder
    audio_before = (folder / "audio.wav").read_bytes()
    video_before = hashlib.sha256((folder / "video.mp4").read_bytes()).hexdigest()
    values = governor_values(pause_gain=0.0, neutral_gain=0.3, emphasis_gain=1.5)
    updates, error = drain(ui_events.rerender(job_id, *values))
    assert error is None, error
    assert all(u.get("job_id") in (None, job_id) for u in updates)
    assert "script" not in {k for u in updates for k in u} and "audio" not in {k for u in updates for k in u}
    assert (folder / "audio.wav").read_bytes() == audio_before
    assert hashlib.sha256((folder / "video.mp4").read_bytes()).hexdigest() != video_before
    assert Path(last(updates, "video")) == folder / "video.mp4"
    gains = np.asarray(Job.open(job_id).read_json("gains.json")["gains"])
    assert gains.min() == pytest.approx(0.0, abs=1e-3) and gains.max() == pytest.approx(1.5, abs=1e-3)
    assert "Re-rendered" in updates[-1]["status"] and "| script |" in updates[-1]["stages"]


def test_speak_edited_script_makes_a_new_job_with_the_edit(generated: list[dict]) -> None:
    job_id = last(generated, "job_id")
    updates, error = drain(ui_events.speak_edited(job_id, SHORT_SCRIPT, "mkbhd"))
    assert error is None, error
    new_id = last(updates, "job_id")
    assert new_id != job_id
    saved = Job.open(new_id).path("script.txt").read_text(encoding="utf-8")
    assert "*seriously*" in saved and "[pause 0.4]" in saved
    assert "*seriously*" in last(updates, "script")
    assert Path(last(updates, "video")).is_file()


def test_speak_without_a_job_speaks_the_pasted_script(outputs: Path) -> None:
    updates, error = drain(ui_events.speak_edited(None, SHORT_SCRIPT, "ijustine"))
    assert error is None, error
    request = Job.open(last(updates, "job_id")).read_json("request.json")
    assert request["persona"] == "ijustine" and request["script"] == SHORT_SCRIPT


def test_an_empty_prompt_is_a_message_not_a_traceback(outputs: Path) -> None:
    updates, error = drain(ui_events.generate(*form(prompt="   ")))
    assert error is not None and "prompt is empty" in error
    assert value_of(updates[0]["video"]) is None  # the previous result was cleared first


def test_a_failed_stage_keeps_the_earlier_results(outputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A broken ffmpeg fails the video stage after script, speech, motion and governor ran.
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(outputs / "no-such-ffmpeg"))
    updates, error = drain(ui_events.generate(*form()))
    assert error is not None and "ffmpeg" in error
    assert last(updates, "script") and last(updates, "audio") and isinstance(last(updates, "plot"), Figure)
    assert all(value_of(u.get("video")) is None for u in updates)
    assert "**Error:**" in updates[-1]["status"] and "| governor |" in updates[-1]["stages"]
    manifest = Job.open(last(updates, "job_id")).manifest
    assert manifest["state"] == "failed" and manifest["error"]["stage"] == "video"


def test_invalid_uploads_are_messages(outputs: Path, tmp_path: Path) -> None:
    not_an_image = tmp_path / "portrait.png"
    not_an_image.write_text("hello")
    _, error = drain(ui_events.generate(*form(portrait=str(not_an_image))))
    assert error is not None and "not an image" in error
    short_voice = tmp_path / "voice.wav"
    with wave.open(str(short_voice), "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(16000)
        wav.writeframes(np.zeros(16000, dtype="<i2").tobytes())
    _, error = drain(ui_events.generate(*form(reference_wav=str(short_voice))))
    assert error is not None and "3 s" in error


def test_rerender_needs_a_job(outputs: Path) -> None:
    updates, error = drain(ui_events.rerender(None, *governor_values()))
    assert error is not None and "generate a video first" in error
    _, error = drain(ui_events.rerender("0" * 32, *governor_values()))
    assert error is not None and "no job" in error
    _, error = drain(ui_events.rerender("0" * 32, *governor_values(pause_gain=9.0)))
    assert error is not None


def test_persona_defaults_follow_the_persona() -> None:
    for persona_id in ("mkbhd", "ijustine"):
        persona = load_persona(persona_id)
        card, temperature, max_tokens, *governor = ui_events.persona_defaults(persona_id)
        assert f"\u25b8 {persona.name}" in card and persona.description in card
        assert temperature == persona.script.temperature and max_tokens == persona.script.max_tokens
        assert governor == governor_values(persona_id)
    assert ui_events.persona_defaults("mkbhd")[-1] != ui_events.persona_defaults("ijustine")[-1]
    with pytest.raises(gr.Error, match="persona"):
        ui_events.persona_defaults("nobody")


def test_persona_gallery_has_a_portrait_and_style_line_each() -> None:
    items = ui_content.persona_gallery(thumb_px=64)
    captions = [caption for _, caption in items]
    assert load_persona("mkbhd").name in captions and load_persona("ijustine").name in captions
    for image, _ in items:
        assert image.shape == (64, 64, 3) and image.std() > 10


def test_intent_figure_shades_every_segment() -> None:
    from persona_video.app.plot import intent_figure

    spans = (
        SegmentSpan(0, "neutral", 0.0, "so", 0.0, 0.4),
        SegmentSpan(1, "pause", 0.0, "", 0.4, 0.8),
        SegmentSpan(2, "emphasis", 1.0, "fast", 0.8, 1.2),
    )
    timing = IntentTimingMap(25, np.r_[np.full(10, 0.5), np.zeros(10), np.ones(10)].astype(np.float32), 1.2, 30, spans)
    figure = intent_figure(timing, np.linspace(0.7, 1.0, 30))
    axes = figure.axes[0]
    assert len(axes.patches) == 3 and len(axes.lines) == 2
    assert axes.get_xlim()[1] == pytest.approx(1.2, abs=0.05)


def test_page_wires_every_event_with_an_api_name() -> None:
    from persona_video.app.layout import build_ui

    demo = build_ui()
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"generate", "speak_script", "rerender", "persona_defaults", "reset", "pick_persona"} <= names
    reset = ui_events.reset()
    assert reset["job_id"] is None and reset["prompt"] == "" and value_of(reset["video"]) is None


def test_a_new_generate_cancels_the_sessions_running_job(outputs: Path) -> None:
    """Click, click again while the first job runs: the first stops with a word on the page, and
    its manifest says cancelled."""
    session = SimpleNamespace(session_hash="two-clicks")
    ui_session.cancel_previous(session)  # the first click's own cancel: nothing runs yet
    first = ui_events.generate(*form(), request=session)
    started = [next(first), next(first)]  # the script is written: the job runs
    ui_session.cancel_previous(session)  # the second click
    updates, error = drain(first)
    assert error is None and "**Cancelled:**" in updates[-1]["status"]
    job_id = last(started + updates, "job_id")
    assert Job.open(job_id).manifest["state"] == "cancelled"


def test_a_generate_whose_cancel_comes_late_is_not_stopped_by_it(outputs: Path) -> None:
    """A click sends its cancel of the session's earlier run beside its own run, and the cancel
    may arrive after the run has started (a loaded server, a slow connection). It must not stop
    the run of its own click."""
    session = SimpleNamespace(session_hash="late-cancel")
    for _click in range(2):  # one after the other, each run to its end
        events = ui_events.generate(*form(prompt="Explain heat pumps"), request=session)
        started = [next(events), next(events)]
        time.sleep(1.0)  # the job has run a while: longer than the clock the page used to trust
        ui_session.cancel_previous(session)  # this click's own cancel
        updates, error = drain(events)
        assert error is None and "**Cancelled:**" not in updates[-1]["status"]
        assert Job.open(last(started + updates, "job_id")).manifest["state"] == "done"
