"""On ZeroGPU, the XTTS speech stage asks the platform for a GPU lease sized by the script.

The real ``spaces`` package in ZeroGPU mode talks to a loopback server that answers the
platform's device API (startup report, schedule, allow, release) and records what it is
asked. This machine has no GPU, so the lent worker fails to start CUDA afterwards: the test
is about what reaches the platform, not about the speech.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

pytest.importorskip("torch")
pytest.importorskip("TTS")
pytest.importorskip("spaces")

from persona_video import zerogpu  # noqa: E402

SCRIPT = "Tides rise and fall twice a day because the moon pulls on the sea."

CHILD = r"""
import json, os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

asked = []

class DeviceApi(BaseHTTPRequestHandler):
    def do_POST(self):
        url = urlparse(self.path)
        asked.append([url.path, {k: v[0] for k, v in parse_qs(url.query).items()}])
        body = b"{}"
        if url.path == "/schedule":
            body = json.dumps({"idle": False, "nvidiaIndex": 0, "nvidiaUUID": "GPU-0", "allowToken": "t"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), DeviceApi)
threading.Thread(target=server.serve_forever, daemon=True).start()
os.environ["SPACES_ZERO_DEVICE_API_URL"] = f"http://127.0.0.1:{server.server_port}"

from persona_video import zerogpu
from persona_video.personas import load_persona
from persona_video.pipeline import choose_backends
from persona_video.script import script_from_text
from persona_video.speech.stage import speak
from persona_video.types import Request

zerogpu.report_startup()
persona = load_persona("mkbhd")
request = Request(persona="mkbhd", script=sys.argv[1], speech_backend="xtts", reference_wav=sys.argv[2])
try:
    speak(script_from_text(request.script, persona), persona, request, choose_backends(request, persona)["speech"])
    outcome = "spoke"
except Exception as e:
    outcome = type(e).__name__
print(json.dumps({"asked": asked, "outcome": outcome}))
"""


def test_the_speech_stage_asks_zerogpu_for_a_lease_sized_by_the_script(tiny_xtts: Path, tmp_path: Path) -> None:
    reference = tmp_path / "voice.wav"
    t = np.arange(4 * 16000) / 16000
    soundfile.write(str(reference), (0.3 * np.sin(2 * np.pi * 160 * t)).astype(np.float32), 16000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPACES_")}
    env |= {"SPACES_ZERO_GPU": "true", "PERSONA_VIDEO_CHECKPOINTS": str(tiny_xtts.parent)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, SCRIPT, str(reference)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    paths = [path for path, _ in report["asked"]]
    assert paths[0] == "/startup-report"  # the platform hears the app is up, with its GPU function
    schedule = next(params for path, params in report["asked"] if path == "/schedule")
    words = len(SCRIPT.split())
    assert int(schedule["durationSeconds"]) == zerogpu.speech_gpu_s(words) == 11
    assert "/release" in paths  # the lease is handed back even though this machine's worker has no CUDA
