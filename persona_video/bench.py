"""``python -m persona_video bench``: the performance targets of DESIGN.md, measured.

Runs a fixed script of about 25 s of speech through every stage with the
embedded defaults, warm (models loaded, as in the running app), and reports
per-stage wall time (median of the repeats), the real-time factor, the time
to the first stage event and to playable audio, re-render time, renderer
frames/s on one core, the cold start (imports and model loads, in a fresh
process), and peak memory.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_SCRIPT = (
    "So, [pause 0.45] the new *M4 Mac Mini* is small, quiet and *seriously* fast. [pause 0.45] "
    "It starts at *599 dollars*, [pause 0.4] and for most people, [pause 0.4] that is the *best* value "
    "in a desktop today. [pause 0.5] The chip handles photo edits, [pause 0.4] code and video calls "
    "without a sound. [pause 0.45] Ports are on the front now, [pause 0.4] which is a *small* change "
    "you notice every day. [pause 0.5] If you need a simple, [pause 0.4] powerful computer, [pause 0.4] "
    "this is the one to get."
)

#: The local script model's targets (DESIGN.md): on a random-weight GGUF of the default model's shapes.
LOCAL_TARGETS = {
    "first_sentence_s": 1.5,
    "script_120_words_s": 8.0,
    "peak_memory_with_model_mb": 2500.0,
}
#: Markup tokens of a 120-word script (about 1.6 tokens a word: the words, stars and pauses).
SCRIPT_120_WORDS_TOKENS = 192

TARGETS = {
    "pipeline_warm_s": 6.0,
    "cold_start_s": 5.0,
    "rerender_s": 2.0,
    "rerender_every_frame_s": 2.0,
    "first_event_s": 0.5,
    "audio_ready_s": 2.0,
    "render_fps_one_core": 200.0,
    "peak_memory_mb": 1500.0,
}


#: Governor changes re-rendered in turn on the benchmark job: one slider at a time (frames of
#: one intent change, the rest come from the frame cache), a setting compact motion ignores
#: (nothing changes), the governor switched off (every frame changes) and on again (the motion
#: of an earlier render: its kept video comes back).
RERENDER_CHANGES = (
    ("pause", {"pause_gain": 0.55}),
    ("neutral", {"neutral_gain": 0.75}),
    ("emphasis", {"emphasis_gain": 1.2}),
    ("clamp", {"expression_clamp_sigma": 2.5}),
    ("governor_off", {"enabled": False}),
    ("governor_on_again", {"enabled": True}),
)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cold_start_s() -> float:
    """Imports and model loads in a fresh process, as a first CLI run pays them."""
    code = (
        "import time; t=time.perf_counter();"
        "from persona_video.personas import load_persona;"
        "from persona_video.speech.voices import get_voice; get_voice('heart');"
        "from persona_video.stages import load_portrait_for; p=load_persona('mkbhd');"
        "load_portrait_for(p, None, 'crop');"
        "import persona_video.motion, persona_video.governor, persona_video.encode;"
        "print(time.perf_counter()-t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _one_run(root: Path) -> dict[str, float]:
    from .pipeline import Request, run

    start = time.perf_counter()
    times: dict[str, float] = {}
    job = None
    for event in run(Request(persona="mkbhd", script=BENCH_SCRIPT), root=root):
        now = time.perf_counter() - start
        if event.stage == "script":
            times["first_event_s"] = now
        if event.stage == "speech":
            times["audio_ready_s"] = now
            times["audio_s"] = event.result.duration_s
        if event.stage == "done":
            job = event.result
        else:
            times[event.stage] = event.seconds
    times["pipeline_warm_s"] = time.perf_counter() - start
    times["job_id"] = job.job_id  # type: ignore[union-attr]
    return times


def _render_fps_one_core() -> float:
    from .render import bench_render

    return float(bench_render(num_frames=250)["frames_per_s"])


def bench_model_path() -> Path:
    """The benchmark's random-weight GGUF of Qwen2.5-1.5B-Instruct's shapes (Q4_K/Q6_K, about
    1 GB), written once into the temp folder and reused."""
    import re

    from .personas import list_personas
    from .script.local_writer import markup_instruction
    from .script.random_gguf import QWEN25_15B, TINY_WORDS, write_model

    path = Path(tempfile.gettempdir()) / "persona-video-bench" / "qwen2.5-1.5b-shapes-random-q4k-v2.gguf"
    if not path.is_file():
        # the words of the system prompts are whole tokens, so the prompts cost as many tokens as with Qwen's
        # own vocabulary (about one a word), not one a byte
        text = " ".join(markup_instruction(p) for p in list_personas())
        words = tuple(dict.fromkeys([*re.findall(r"[A-Za-z]+", text), *TINY_WORDS]))
        partial = path.with_suffix(".partial")
        write_model(partial, QWEN25_15B, seed=0, words=words, merge_words=True, name="random, Qwen2.5-1.5B shapes")
        partial.replace(path)
    return path


def _bench_local_writer() -> dict:
    """Load time, prefill and decode speed, time to the first sentence and to a 120-word
    script, on the default model's shapes with the system prompt cached, as in the app."""
    from .personas import load_persona
    from .script import stream_script
    from .script.local import load_local_model, render_chat
    from .script.local_writer import length_request, markup_grammar, markup_instruction, warm_local

    path = bench_model_path()
    persona = load_persona("mkbhd")
    start = time.perf_counter()
    model = load_local_model(path)
    load_s = time.perf_counter() - start
    warm_local(persona, path)  # the server's warm-up: the system prompt into the cache
    prefill = model.timings
    prompt = "How does a heat pump keep a house warm in winter?"
    env = {"PERSONA_VIDEO_LLM_GGUF": str(path)}
    start = time.perf_counter()
    first_sentence_s, words = None, 0
    for draft in stream_script(prompt, persona, env=env, backend="local", seed=1):
        if draft.sentences and first_sentence_s is None:
            first_sentence_s = time.perf_counter() - start
            words = len(draft.sentences[0].spoken_text.split())
    text = render_chat(model.file, markup_instruction(persona), length_request(prompt, 1200))
    start = time.perf_counter()
    for _ in model.complete(
        text,
        grammar=markup_grammar(24),
        temperature=0.6,
        max_tokens=SCRIPT_120_WORDS_TOKENS,
        seed=2,
        cache_key=persona.id,
    ):
        pass
    script_s = time.perf_counter() - start
    decode = model.timings
    return {
        "model": path.name,
        "load_s": round(load_s, 3),
        "system_prompt_tokens": prefill.prompt_tokens,
        "prefill_tokens_per_s": round(prefill.prompt_per_s, 1),
        "decode_tokens_per_s": round(decode.predicted_per_s, 1),
        "cached_prompt_tokens": decode.cached_tokens,
        "first_sentence_s": round(first_sentence_s or float("nan"), 3),
        "first_sentence_words": words,
        "script_120_words_s": round(script_s, 3),
        "script_tokens": decode.predicted_tokens,
        "peak_memory_with_model_mb": round(_peak_rss_mb(), 1),
    }


def run_bench(repeat: int = 3, *, local_model: bool = True) -> dict:
    """Measure everything; returns a dict of figures and the targets they are held to."""
    import cv2

    from .pipeline import rerender

    cold = _cold_start_s()
    with tempfile.TemporaryDirectory(prefix="persona-bench-") as scratch:
        root = Path(scratch)
        _one_run(root)  # warm-up: loads voices, face mesh, animator
        runs = [_one_run(root) for _ in range(max(1, repeat))]
        job_id = runs[-1]["job_id"]
        rerender_times = {}
        for name, change in RERENDER_CHANGES:
            start = time.perf_counter()
            for _ in rerender(job_id, change, root=root):
                pass
            rerender_times[name] = time.perf_counter() - start
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        fps = _render_fps_one_core()
    finally:
        cv2.setNumThreads(threads)
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0] if key != "job_id"}
    audio_s = median["audio_s"]
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "audio_s": round(audio_s, 2),
        "stages_s": {
            k: round(median[k], 3) for k in ("script", "speech", "motion", "governor", "video") if k in median
        },
        "pipeline_warm_s": round(median["pipeline_warm_s"], 3),
        "real_time_factor": round(median["pipeline_warm_s"] / audio_s, 3),
        "first_event_s": round(median["first_event_s"], 3),
        "audio_ready_s": round(median["audio_ready_s"], 3),
        "rerender_s": round(max(rerender_times[name] for name in ("pause", "neutral", "emphasis")), 3),
        "rerender_every_frame_s": round(rerender_times["governor_off"], 3),
        "rerender_by_change_s": {name: round(seconds, 3) for name, seconds in rerender_times.items()},
        "cold_start_s": round(cold, 3),
        "render_fps_one_core": round(fps, 1),
        "peak_memory_mb": round(_peak_rss_mb(), 1),
        "targets": TARGETS,
    }
    if local_model:
        report["local_writer"] = {**_bench_local_writer(), "targets": LOCAL_TARGETS}
    return report


def format_table(report: dict) -> str:
    """A Markdown table of the figures against their targets."""
    lines = [
        f"Speech: {report['audio_s']} s; machine: {report['machine']['cpus']} CPUs, "
        f"Python {report['machine']['python']}",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
    ]
    for stage, seconds in report["stages_s"].items():
        lines.append(f"| stage {stage} | {seconds:.3f} s | |")
    for key, target in TARGETS.items():
        value = report[key]
        better = value >= target if key == "render_fps_one_core" else value <= target
        unit = " frames/s" if key == "render_fps_one_core" else (" MB" if key.endswith("_mb") else " s")
        sign = "≥" if key == "render_fps_one_core" else "≤"
        lines.append(f"| {key} | {value}{unit} | {sign} {target}{unit} {'✓' if better else '✗'} |")
    lines.append(f"| real-time factor | {report['real_time_factor']} | |")
    for name, seconds in report.get("rerender_by_change_s", {}).items():
        lines.append(f"| re-render, {name} | {seconds:.3f} s | |")
    local = report.get("local_writer")
    if local:
        lines += [
            "",
            f"Local script model: {local['model']} (random weights, the default model's shapes), "
            f"loaded in {local['load_s']} s; system prompt {local['system_prompt_tokens']} tokens, "
            f"prefill {local['prefill_tokens_per_s']} tokens/s, decode {local['decode_tokens_per_s']} tokens/s, "
            f"{local['cached_prompt_tokens']} prompt tokens from the cache",
            "",
            "| figure | measured | target |",
            "|---|---|---|",
        ]
        for key, target in LOCAL_TARGETS.items():
            value = local[key]
            unit = " MB" if key.endswith("_mb") else " s"
            note = {
                "first_sentence_s": f" ({local['first_sentence_words']} words)",
                "script_120_words_s": f" ({local['script_tokens']} tokens)",
            }.get(key, "")
            lines.append(f"| {key} | {value}{unit}{note} | ≤ {target}{unit} {'✓' if value <= target else '✗'} |")
    return "\n".join(lines)
