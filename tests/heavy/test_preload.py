"""The server's warm-up loads XTTS v2 and GFPGAN where they can run, once, into the same caches a
request uses: the first Generate does not pay for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("TTS")
pytest.importorskip("spandrel")

CHILD = """
import json
from persona_video.enhance import gfpgan
from persona_video.speech import xtts
from persona_video.server import warm_up
from persona_video.weights.registry import backend_dir, weight_path

before = (len(xtts._MODELS), len(gfpgan._MODELS))
warm_up(script_model=False)
after = (len(xtts._MODELS), len(gfpgan._MODELS))
# what a request builds next finds them loaded
xtts.XTTSBackend(backend_dir("xtts"), device="auto").sample_rate
gfpgan.GFPGANEnhancer(weight_path("gfpgan"), device="auto")
print(json.dumps({"before": before, "after": after, "again": [len(xtts._MODELS), len(gfpgan._MODELS)],
                  "devices": sorted({key[1] for key in [*xtts._MODELS, *gfpgan._MODELS]})}))
"""


def test_warm_up_loads_the_heavy_models_a_request_then_reuses(
    tiny_xtts: Path, random_gfpgan: Path, tmp_path: Path
) -> None:
    root = tmp_path / "checkpoints"
    (root / "gfpgan").mkdir(parents=True)
    (root / "xtts_v2").symlink_to(tiny_xtts)
    (root / "gfpgan" / "GFPGANv1.4.pth").symlink_to(random_gfpgan)
    env = {**os.environ, "PERSONA_VIDEO_CHECKPOINTS": str(root), "HF_HUB_CACHE": str(tmp_path / "hf-cache")}
    env.pop("SPACES_ZERO_GPU", None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["before"] == [0, 0] and report["after"] == [1, 1] and report["again"] == [1, 1]
    assert report["devices"] == ["cpu"]  # no GPU here: both run on the CPU
