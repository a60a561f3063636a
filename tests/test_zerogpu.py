"""The ZeroGPU wrapper of the heavy stage calls, off ZeroGPU: a plain in-process call whether
the ``spaces`` package is missing or installed, and leases sized by the work."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from persona_video import zerogpu
from persona_video.errors import BackendUnavailable, InputError


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPACES_")} | env
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=environment, check=False
    )


def test_without_the_package_a_stage_call_is_a_plain_call() -> None:
    # sys.modules["spaces"] = None is what an uninstalled package looks like to `import spaces`
    code = (
        "import os, sys, threading; sys.modules['spaces'] = None\n"
        "from persona_video import zerogpu\n"
        "assert zerogpu._RUNNER is zerogpu._call\n"
        "where = zerogpu.on_gpu(60, lambda: (os.getpid(), threading.get_ident()))\n"
        "print(where == (os.getpid(), threading.get_ident()), 'torch' in sys.modules, 'gradio' in sys.modules)\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "False"]  # same process and thread; nothing heavy imported


def test_zerogpu_without_the_package_names_what_to_install() -> None:
    code = "import sys; sys.modules['spaces'] = None\nimport persona_video.zerogpu\n"
    out = _run(code, SPACES_ZERO_GPU="true")
    assert out.returncode != 0
    assert "SPACES_ZERO_GPU is set but the spaces package is missing: pip install spaces" in out.stderr


def test_with_the_package_but_no_zerogpu_the_call_is_untouched() -> None:
    spaces = pytest.importorskip("spaces")
    # the real decorator, given our function, hands it back as it is when not on ZeroGPU
    assert spaces.GPU(duration=zerogpu._duration)(zerogpu._call) is zerogpu._call
    assert zerogpu.make_runner({"SPACES_ZERO_GPU": "false"}) is zerogpu._call
    assert zerogpu.make_runner({}) is zerogpu._call
    assert zerogpu.on_gpu(30, lambda a, b=0: (threading.get_ident(), a + b), 2, b=3) == (threading.get_ident(), 5)
    with pytest.raises(InputError, match="the stage's own error"):
        zerogpu.on_gpu(30, _fail)  # errors come through as they are, not wrapped
    zerogpu.report_startup()  # off ZeroGPU there is no platform to tell


def _fail() -> None:
    raise InputError("the stage's own error")


def test_zerogpu_is_recognised_as_spaces_reads_it() -> None:
    assert zerogpu.on_zero_gpu({"SPACES_ZERO_GPU": "true"})
    assert zerogpu.on_zero_gpu({"SPACES_ZERO_GPU": "1"})
    assert not zerogpu.on_zero_gpu({"SPACES_ZERO_GPU": "false"})
    assert not zerogpu.on_zero_gpu({})


def test_the_lease_grows_with_the_work_within_what_zerogpu_grants() -> None:
    # 25 s of speech is about 62 words; a 25 s video is 625 frames
    assert zerogpu.speech_gpu_s(0) == zerogpu.MIN_GPU_S
    assert zerogpu.speech_gpu_s(62) < zerogpu.speech_gpu_s(124) < zerogpu.speech_gpu_s(248)
    assert zerogpu.speech_gpu_s(62) == 21  # 8 s set-up + 0.5 x 24.8 s of speech, rounded up
    assert zerogpu.video_gpu_s(625) == 40  # 8 s set-up + 0.05 s x 625 frames, rounded up
    assert zerogpu.video_gpu_s(10**6) == zerogpu.speech_gpu_s(10**6) == zerogpu.MAX_GPU_S == 300
    assert zerogpu.clamp_gpu_s(float("nan")) == zerogpu.MAX_GPU_S
    assert zerogpu._duration(45, print, (), {}) == 45  # what spaces asks the platform for


def test_sadtalker_is_refused_on_zerogpu_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from persona_video.motion.stage import choose_motion, motion_backend_for, sadtalker_status
    from persona_video.types import Request

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert sadtalker_status().reason == zerogpu.SADTALKER_REASON
    assert motion_backend_for(Request(prompt="Explain tides")) == "embedded"
    with pytest.raises(BackendUnavailable, match="the GPU is lent only to this app's own process"):
        choose_motion(Request(prompt="Explain tides", motion_backend="sadtalker"))


def test_the_page_says_why_motion_is_the_embedded_animator_on_zerogpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from persona_video.app.content import auto_defaults_note

    assert "SadTalker" not in auto_defaults_note()
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert "Motion is the **embedded animator** here, not SadTalker" in auto_defaults_note()
    assert "runs in its own Python environment" in auto_defaults_note()


def test_what_the_gpu_stage_calls_take_and_give_pickles() -> None:
    """ZeroGPU hands a wrapped call's arguments to its GPU worker process, and the result back, by pickle."""
    import pickle

    from persona_video.motion.generator import generate_motion
    from persona_video.personas import load_persona
    from persona_video.pipeline import Request
    from persona_video.script import script_from_text
    from persona_video.speech import synthesize_with_intent

    persona = load_persona("mkbhd")
    request = Request(persona="mkbhd", script="Tides rise and fall twice a day.")
    script = script_from_text(request.script, persona)
    # the speech call: its arguments, and a Speech as it returns one
    speech = synthesize_with_intent(script.intent, persona)
    for value in (synthesize_with_intent, script.intent, persona, request.reference_wav, speech):
        pickle.loads(pickle.dumps(value))
    # the GFPGAN video call: output path, portrait (with its animator), track, audio, request
    from persona_video.pipeline.video import encode_enhanced
    from persona_video.render.stage import load_portrait_for

    portrait = load_portrait_for(persona, None, "crop")
    track = generate_motion(speech, persona.motion, seed=0)
    args = (encode_enhanced, "video.mp4", portrait, track, speech.audio, speech.sample_rate, request)
    assert pickle.loads(pickle.dumps(args))[2].animator.width == portrait.animator.width
