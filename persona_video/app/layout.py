"""The Gradio page: pick a persona, type a prompt, watch each stage arrive,
tweak the motion governor and re-render.

``build_ui()`` builds the Blocks (nothing runs at import); the event functions
live in :mod:`persona_video.app.events`. Theme, CSS and the folders the page
may serve are in :func:`launch_options`, for ``Blocks.launch`` or
``gr.mount_gradio_app``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from ..enhance.stage import ENHANCERS
from ..governor import GOVERNOR_FIELDS
from ..jobs.broker import broker_url_from_env
from ..jobs.folder import outputs_dir
from ..motion.stage import MOTION_BACKENDS
from ..personas import list_personas
from ..render.stage import FRAMINGS
from ..script import SCRIPT_BACKENDS
from ..speech import SPEECH_BACKENDS
from ..speech.voices import EMBEDDED_VOICES
from . import content as ui_content
from . import events as ui_events
from . import session as ui_session
from .player import HANDOVER_JS, LivePlayer

logger = logging.getLogger(__name__)

TITLE = "Persona Video"
TAGLINE = (
    "Turn a prompt into a short talking-head explainer in a presenter's style — "
    "script, voice, motion and video, offline on a CPU."
)
EXAMPLE_PROMPTS = (
    "Explain the M4 Mac Mini",
    "Why do phone batteries wear out?",
    "What is USB-C and why does it matter?",
    "Is a foldable phone worth it in 2025?",
)
DEFAULT_PERSONA = "mkbhd"
CSS = """
.pv-status {min-height: 2.4em;}
.pv-status p {margin: 0.2em 0;}
.pv-stages table {font-size: 0.9em;}
footer {visibility: hidden;}
"""


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``demo.launch`` / ``gr.mount_gradio_app``: theme, CSS,
    and the outputs folder (job videos and audio are served from there)."""
    return {
        "theme": gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", neutral_hue="slate"),
        "css": CSS,
        "allowed_paths": [str(outputs_dir())],
    }


def _streaming(fn: Callable[..., Iterator[dict]], names: tuple[str, ...]) -> Callable[..., Iterator[tuple]]:
    """An event generator yielding name->value dicts as Gradio output tuples (gr.skip() for the rest)."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Iterator[tuple]:
        for update in fn(*args, **kwargs):
            yield tuple(update.get(name, gr.skip()) for name in names)

    return wrapped


def _single(fn: Callable[..., dict], names: tuple[str, ...]) -> Callable[..., tuple]:
    @functools.wraps(fn)
    def wrapped(*args: Any) -> tuple:
        update = fn(*args)
        return tuple(update.get(name, gr.skip()) for name in names)

    return wrapped


def _persona_inputs() -> tuple[gr.Radio, gr.Markdown]:
    personas = list_personas()
    ids = [persona.id for persona in personas]
    default = DEFAULT_PERSONA if DEFAULT_PERSONA in ids else ids[0]
    gallery = gr.Gallery(
        value=ui_content.persona_gallery(),
        label="Personas (style presets)",
        columns=len(ids),
        height=250,
        allow_preview=False,
        object_fit="cover",
        buttons=[],
        elem_id="persona-gallery",
    )
    persona = gr.Radio(
        choices=[(p.name, p.id) for p in personas], value=default, label="Persona", elem_id="persona-radio"
    )
    card = gr.Markdown(ui_content.persona_card(default))

    def pick(event: gr.SelectData) -> str:
        return ids[event.index]

    gallery.select(pick, None, persona, api_name="pick_persona")
    return persona, card


def build_ui() -> gr.Blocks:
    """The whole page; launch it with ``build_ui().launch(**launch_options())``."""
    personas = {p.id: p for p in list_personas()}
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{TAGLINE}")
        job_id = gr.State(None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=340):
                persona, card = _persona_inputs()
                chosen = personas.get(persona.value) or next(iter(personas.values()))
                defaults = chosen.governor_config().to_dict()
                writer_status = gr.Markdown(elem_id="writer-status")
                writer_timer = gr.Timer(2.0, active=False)
                weights_status = gr.Markdown(elem_id="weights-status")
                weights_timer = gr.Timer(2.0, active=False)
                prompt = gr.Textbox(
                    label="Prompt",
                    placeholder="What should the video explain?",
                    lines=2,
                    max_lines=6,
                    elem_id="prompt",
                )
                gr.Examples([[text] for text in EXAMPLE_PROMPTS], inputs=[prompt], label="Examples")
                with gr.Row():
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    another_button = gr.Button("Generate another", visible=False, elem_id="another")
                with gr.Accordion("Motion governor", open=True):
                    enabled = gr.Checkbox(value=defaults["enabled"], label="Governor on", elem_id="gov-enabled")
                    sliders = [
                        gr.Slider(
                            spec.minimum,
                            spec.maximum,
                            value=defaults[name],
                            step=spec.step,
                            label=spec.label,
                            info=spec.help,
                            elem_id=f"gov-{name}",
                        )
                        for name, spec in GOVERNOR_FIELDS.items()
                    ]
                    rerender_button = gr.Button("Re-render motion", elem_id="rerender")
                with gr.Accordion("Your own portrait and voice (optional)", open=False):
                    portrait = gr.Image(
                        type="filepath", label="Portrait (one frontal face)", sources=["upload"], height=220
                    )
                    reference = gr.Audio(
                        type="filepath", label="Reference voice (3–30 s)", sources=["upload"], format="wav"
                    )
                    gr.Markdown(ui_content.voice_cloning_note())
                with gr.Accordion("Advanced", open=False):
                    temperature = gr.Slider(0.0, 2.0, value=chosen.script.temperature, step=0.05, label="Temperature")
                    max_tokens = gr.Slider(16, 2048, value=chosen.script.max_tokens, step=1, label="Max tokens")
                    with gr.Row():
                        seed = gr.Number(value=0, precision=0, label="Seed")
                        voice = gr.Dropdown(
                            [("persona's voice", "auto"), *[(v, v) for v in EMBEDDED_VOICES]],
                            value="auto",
                            label="Voice",
                        )
                    with gr.Row():
                        script_backend = gr.Dropdown(list(SCRIPT_BACKENDS), value="auto", label="Script backend")
                        speech_backend = gr.Dropdown(list(SPEECH_BACKENDS), value="auto", label="Speech backend")
                    with gr.Row():
                        motion_backend = gr.Dropdown(list(MOTION_BACKENDS), value="auto", label="Motion backend")
                        enhancer = gr.Dropdown(list(ENHANCERS), value="auto", label="Face enhancer")
                    with gr.Row():
                        framing = gr.Radio(list(FRAMINGS), value="crop", label="Framing")
                        still = gr.Checkbox(value=False, label="Still head (animate the face only)")
                    gr.Markdown(ui_content.auto_defaults_note())
                    auto = gr.Markdown(
                        "What `auto` picked appears here after a run.", label="Auto picked", elem_id="auto-picked"
                    )
            with gr.Column(scale=3, min_width=420):
                status = gr.Markdown(
                    "Pick a persona, type a prompt and press **Generate**.",
                    label="Status",
                    elem_classes="pv-status",
                    elem_id="status",
                )
                with gr.Row(equal_height=False):
                    with gr.Column():
                        # the job's stream while it is made; the finished MP4 below takes over at the end
                        live = LivePlayer(
                            streaming=True,
                            label="Video (playing while it is made)",
                            autoplay=True,
                            interactive=False,
                            height=360,
                            visible=False,
                            elem_id="live",
                        )
                        video = gr.Video(
                            label="Video", buttons=["download"], interactive=False, height=360, elem_id="video"
                        )
                        files = gr.File(label="Downloads", file_count="multiple", interactive=False, height=150)
                    with gr.Column():
                        script = gr.Textbox(
                            label="Script",
                            info="Editable: `[pause 0.4]` for a pause, `*words*` for emphasis.",
                            lines=9,
                            max_lines=18,
                            interactive=True,
                            elem_id="script",
                        )
                        speak_button = gr.Button("Speak edited script", elem_id="speak")
                        audio = gr.Audio(label="Speech", type="filepath", interactive=False, elem_id="audio")
                plot = gr.Plot(label="Intent plot", show_label=False, elem_id="plot")
                stages = gr.Markdown("", label="Stages", elem_classes="pv-stages", elem_id="stages")

        outputs = {
            "status": status,
            "script": script,
            "audio": audio,
            "plot": plot,
            "video": video,
            "files": files,
            "stages": stages,
            "auto": auto,
            "job_id": job_id,
            "another": another_button,
            "live": live,
        }
        names = tuple(outputs)
        governor_inputs = [enabled, *sliders]
        form = [
            persona,
            prompt,
            portrait,
            reference,
            temperature,
            max_tokens,
            seed,
            voice,
            script_backend,
            speech_backend,
            motion_backend,
            enhancer,
            framing,
            still,
            *governor_inputs,
        ]
        outs = list(outputs.values())
        # one pipeline at a time on a 2-core machine: the three pipeline events share one
        # concurrency group, so visitors queue (Gradio shows their place) instead of halving each other's speed;
        # with a broker the workers run the jobs and the broker's queue bound holds, so visitors do not wait here
        pipeline_group = {"concurrency_id": "pipeline", "concurrency_limit": None if broker_url_from_env() else 1}
        # a new Generate first stops this session's running job (outside the queue, so it is not behind it)
        generate_button.click(ui_session.cancel_previous, None, None, queue=False, api_visibility="undocumented")
        generate_button.click(_streaming(ui_events.generate, names), form, outs, api_name="generate", **pipeline_group)
        speak_button.click(
            _streaming(ui_events.speak_edited, names),
            [job_id, script, persona],
            outs,
            api_name="speak_script",
            **pipeline_group,
        )
        rerender_button.click(
            _streaming(ui_events.rerender, names),
            [job_id, *governor_inputs],
            outs,
            api_name="rerender",
            **pipeline_group,
        )
        video.change(None, None, None, js=HANDOVER_JS, api_visibility="undocumented")
        demo.unload(ui_session.cancel_on_close)
        reset_names = (*names, "prompt")
        another_button.click(_single(ui_events.reset, reset_names), None, [*outs, prompt], api_name="reset")
        # who writes scripts here; while the script model downloads, its progress every 2 s
        writer_outputs = [writer_status, writer_timer]
        demo.load(ui_session.script_writer_status, None, writer_outputs, api_visibility="undocumented")
        writer_timer.tick(ui_session.script_writer_status, None, writer_outputs, api_visibility="undocumented")
        # a deployment's first start: the heavy weights' download, every 2 s while it runs
        weights_outputs = [weights_status, weights_timer]
        demo.load(ui_content.heavy_weights_status, None, weights_outputs, api_visibility="undocumented")
        weights_timer.tick(ui_content.heavy_weights_status, None, weights_outputs, api_visibility="undocumented")
        persona.change(
            ui_events.persona_defaults,
            persona,
            [card, temperature, max_tokens, *governor_inputs],
            api_name="persona_defaults",
        )
    return demo


def launch(demo: gr.Blocks | None = None) -> None:
    """Serve the page alone (no REST API), host and port from GRADIO_SERVER_NAME / _PORT."""
    demo = demo or build_ui()
    demo.queue(default_concurrency_limit=2).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_options(),
    )
