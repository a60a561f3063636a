"""The command line as a user runs it: a real subprocess each time."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from persona_video.speech import read_wav

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, cwd, env=None):
    environment = {**os.environ, "PERSONA_VIDEO_OUTPUTS": str(Path(cwd) / "outputs"), **(env or {})}
    environment.pop("GEMINI_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "persona_video", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("persona", ["mkbhd", "ijustine"])
def test_speak_writes_script_audio_and_timing(tmp_path, persona):
    out = tmp_path / "speak"
    result = cli("speak", "--persona", persona, "--prompt", "Explain the M4 Mac Mini", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "script: offline" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["audio.wav", "script.json", "script.txt", "timing.json"]
    timing = json.loads((out / "timing.json").read_text())
    audio, rate = read_wav(out / "audio.wav")
    assert timing["num_frames"] == int(len(audio) / rate * 25) and len(timing["frame_intents"]) == timing["num_frames"]
    assert {"fps", "frame_intents", "total_duration", "num_frames", "segments"} <= set(timing)
    script = json.loads((out / "script.json").read_text())
    assert script["backend"] == "offline" and any(s["intent_type"] == "pause" for s in script["segments"])
    pauses = [s["end_s"] - s["start_s"] for s in timing["segments"] if s["intent_type"] == "pause"]
    low = 0.4 if persona == "mkbhd" else 0.2
    assert np.median(pauses) >= low - 0.04


def test_speak_a_given_script_with_the_male_voice(tmp_path):
    out = tmp_path / "given"
    script = "So, [pause 0.4] this new *M4 Mac Mini* is *seriously* fast."
    result = cli("speak", "--script", script, "--voice", "joe", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (out / "script.txt").read_text().strip() == script
    assert read_wav(out / "audio.wav")[1] == 22050
    assert "piper voice joe" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", ""], "prompt is empty"),
        (["--prompt", "x" * 5000], "5000 characters"),
        (["--persona", "nobody", "--prompt", "hi"], "unknown persona"),
        (["--script", "this is *broken"], "never closed"),
        (["--prompt", "hi", "--speech-backend", "festival"], "unknown speech backend"),
        (["--prompt", "hi", "--script-backend", "gemini"], "GEMINI_API_KEY"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = cli("speak", *args, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_generate_and_rerender(tmp_path):
    video = tmp_path / "clip.mp4"
    result = cli("generate", "--persona", "ijustine", "--script", "Hi! This is *fast*.", "-o", str(video), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert video.stat().st_size > 1000 and "done in" in result.stdout
    (job,) = (tmp_path / "outputs").iterdir()
    result = cli("rerender", str(job), "--governor", "pause_gain=0.4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[:2]] == ["governor", "video"]
    assert json.loads((job / "gains.json").read_text())["config"]["pause_gain"] == 0.4


def test_generate_rejects_a_portrait_without_a_face(tmp_path):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((400, 400, 3), 128, np.uint8)).save(blank)
    result = cli("generate", "--prompt", "Explain it", "--portrait", str(blank), cwd=tmp_path)
    assert result.returncode == 2 and "no face" in result.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())
