"""Persona Video's web app (the Hugging Face Space entry point).

    python app.py        # serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (0.0.0.0:7860)

Nothing heavy happens at import: the page is built in ``build_ui()``, and the
voices and face mesh load in the background once the server starts.
"""

from __future__ import annotations

import importlib.util
import logging
import os

# First: on a ZeroGPU Space, `spaces` must be imported before anything imports torch, and
# its GPU function must exist before the server starts (persona_video/zerogpu.py).
import persona_video.zerogpu  # noqa: F401, I001
from persona_video.app.layout import build_ui

__all__ = ["build_ui", "main"]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if importlib.util.find_spec("persona_video.server") is not None:
        # The full server: the REST API at /api/... and this page at /.
        from persona_video.server import serve

        serve(os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    else:
        from persona_video.app.layout import launch

        launch()


if __name__ == "__main__":
    main()
