"""The README's front matter (the Space's settings) lists under ``preload_from_hub`` exactly the
Hub-hosted weights a Space fetches at build time, as the registry pins them."""

from __future__ import annotations

from pathlib import Path

import yaml

from persona_video.weights.catalog import HubFile
from persona_video.weights.registry import GROUPS, preload_from_hub

README = Path(__file__).resolve().parent.parent / "README.md"
#: What a Space preloads: the default script model and XTTS v2. The smaller script model is an
#: alternative to the default one, not preloaded; SadTalker and GFPGAN are release files, not on the Hub.
PRELOADED_GROUPS = ("llm", "xtts")


def _front_matter() -> dict:
    text = README.read_text(encoding="utf-8")
    assert text.startswith("---\n"), "README.md must start with the Space's front matter"
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_preload_from_hub_is_the_registry_s_hub_files_at_their_pins() -> None:
    listed = _front_matter()["preload_from_hub"]
    assert listed == preload_from_hub(PRELOADED_GROUPS), (
        "README front matter preload_from_hub drifted from the registry: replace it with\n"
        + "\n".join(f"  - {line}" for line in preload_from_hub(PRELOADED_GROUPS))
    )
    hub_groups = {name for name, weights in GROUPS.items() if any(isinstance(w.source, HubFile) for w in weights)}
    assert hub_groups - set(PRELOADED_GROUPS) == {"llm-small"}  # a new Hub-hosted group must be decided on here


def test_the_space_runs_this_app() -> None:
    matter = _front_matter()
    assert matter["sdk"] == "gradio" and matter["app_file"] == "app.py"
    assert str(matter["python_version"]) == "3.11"
