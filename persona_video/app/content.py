"""The page's fixed content: the persona gallery and card, and the notes under the uploads and
the backend choices that say what this machine can do."""

from __future__ import annotations

import numpy as np

from ..errors import PersonaVideoError
from ..personas import list_personas, load_persona


def persona_gallery(thumb_px: int = 192) -> list[tuple[np.ndarray, str]]:
    """(square thumbnail (thumb_px, thumb_px, 3) uint8, display name) per persona."""
    from PIL import Image

    from ..render import load_portrait

    items = []
    for persona in list_personas():
        image = load_portrait(persona.portrait, persona.source.parent if persona.source else None)
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = max(0, (height - side) // 3), (width - side) // 2  # faces sit in the upper part
        square = Image.fromarray(image[top : top + side, left : left + side])
        thumb = np.asarray(square.resize((thumb_px, thumb_px), Image.Resampling.LANCZOS))
        items.append((thumb, persona.name))
    return items


def persona_card(persona_id: str) -> str:
    """Every persona's name and style line, the selected one marked."""
    load_persona(persona_id)  # NotFoundError for an unknown id
    lines = []
    for persona in list_personas():
        mark = "**\u25b8 " + persona.name + "**" if persona.id == persona_id else persona.name
        lines.append(f"- {mark} — {persona.description}")
    return "\n".join(lines)


def voice_cloning_note() -> str:
    """One line under the reference-voice upload saying whether cloning can run here."""
    from ..weights.runtime import heavy_backend_status

    status = heavy_backend_status("xtts")
    if status.available:
        return "Voice cloning (XTTS) is available: an uploaded 3–30 s recording is used as the voice."
    return "Voice cloning (XTTS) is not installed here, so the **default voice is used** even with an upload."


def auto_defaults_note() -> str:
    """What `auto` resolves to on this machine before any run."""
    from ..script import resolve_script_backend

    try:
        script_backend, why = resolve_script_backend("auto")
    except PersonaVideoError as e:
        return f"Script backend: {e}"
    text = f"Here `auto` writes scripts with **{script_backend}** ({why})."
    if script_backend == "offline":
        text += " The offline writer is template-based; set `GEMINI_API_KEY` for an LLM-written script."
    from ..zerogpu import SADTALKER_REASON, on_zero_gpu

    if on_zero_gpu():
        text += f" Motion is the **embedded animator** here, not SadTalker: {SADTALKER_REASON}."
    return text


def heavy_weights_status() -> tuple[str, object]:
    """The line that says, at a deployment's first start, how far the heavy weights' download
    is (the timer keeps polling while it runs) and what was held back; empty when nothing was
    asked for."""
    import gradio as gr

    from ..weights.first_start import status

    state = status()
    held = "".join(f" **Held back:** {line}." for line in state["held_back"])
    if state["state"] == "downloading":
        text = f"**First start:** {state['message']} — until then the embedded voice and animator are used.{held}"
        return text, gr.Timer(active=True)
    if state["state"] in ("failed", "offline"):
        return f"**First start:** the model files could not be downloaded ({state['message']}).{held}", gr.Timer(
            active=False
        )
    if state["state"] == "done":
        return f"**First start:** {state['message']}; `auto` uses them now.{held}", gr.Timer(active=False)
    return held.strip(), gr.Timer(active=False)
