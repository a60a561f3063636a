"""``python -m persona_video bench``: the performance targets of DESIGN.md, measured.

Runs a prompt through every stage with the template writer and the embedded defaults (about
25 s of speech), warm (models loaded, as in the running app), and reports, as medians of the
repeats: when the first segment of the stream (sound and picture) was playable after Generate,
the whole job against its own lower bound measured in the same run (the same frames drawn alone
on one core and encoded alone, the two overlapped on two cores), every governor re-render
against the job's first render, the renderer's frames/s on one core, the cold start (imports
and model loads, in a fresh process) and peak memory; with the local script model, the first
segment and the whole job against the writer's own time. Machines differ by half from one to
the next, so the marks are ratios wherever they can be, with the absolute figures beside them.
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

from .script.bench import (
    LOCAL_BENCH_PROMPT,
    LOCAL_TARGETS,
    bench_local_load,
    bench_local_writer,
    bench_model_path,
)

BENCH_SCRIPT = (
    "So, [pause 0.45] the new *M4 Mac Mini* is small, quiet and *seriously* fast. [pause 0.45] "
    "It starts at *599 dollars*, [pause 0.4] and for most people, [pause 0.4] that is the *best* value "
    "in a desktop today. [pause 0.5] The chip handles photo edits, [pause 0.4] code and video calls "
    "without a sound. [pause 0.45] Ports are on the front now, [pause 0.4] which is a *small* change "
    "you notice every day. [pause 0.5] If you need a simple, [pause 0.4] powerful computer, [pause 0.4] "
    "this is the one to get."
)

#: The prompt of the benchmark job (the template writer makes about 25 s of speech of it).
BENCH_PROMPT = "Explain why the new M4 Mac Mini is such good value"

#: Marks: ratios measured in the same run where they can be (DESIGN.md, "Performance targets").
TARGETS = {
    "first_audio_s": 1.0,
    "first_video_s": 1.5,
    "pipeline_vs_lower_bound": 1.15,
    "real_time_factor": 0.08,
    "rerender_vs_first_render": 0.5,
    "cold_start_s": 5.0,
    "render_fps_one_core": 300.0,
    "peak_memory_mb": 1500.0,
}
STAGES = ("script", "speech", "motion", "governor", "video")
#: With the local script model (random weights of the default model's shapes).
LOCAL_STREAM_TARGETS = {"first_video_s": 2.5, "job_after_writer_s": 1.5}


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
        "from persona_video.render.stage import load_portrait_for; p=load_persona('mkbhd');"
        "load_portrait_for(p, None, 'crop');"
        "import persona_video.motion, persona_video.governor, persona_video.encode;"
        "print(time.perf_counter()-t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (ffmpeg) so far."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _one_run(root: Path, **request: object) -> dict[str, float]:
    """One job, timed from Generate: the first stream segment, each stage, the whole job, and the
    cores it kept busy (its CPU time and its ffmpeg's over its wall time)."""
    from .pipeline import Request, run

    cpu = _cpu_s()
    start = time.perf_counter()
    times: dict[str, float] = {}
    job = None
    for event in run(Request(persona="mkbhd", **request), root=root):  # type: ignore[arg-type]
        now = time.perf_counter() - start
        if event.stage == "chunk":
            times.setdefault("first_video_s", now)  # its segment carries sound and picture
        elif event.stage == "script_draft" and event.result.sentences:
            times.setdefault("first_sentence_s", now)
        elif event.stage == "done":
            job = event.result
        elif event.stage != "script_draft":
            times[event.stage] = event.seconds
        if event.stage == "speech":
            times["audio_s"] = event.result.duration_s
    times["pipeline_warm_s"] = time.perf_counter() - start
    times["cores_busy"] = (_cpu_s() - cpu) / times["pipeline_warm_s"]
    times["job_id"] = job.job_id  # type: ignore[union-attr]
    return times


def _lower_bound(root: Path, job_id: str) -> dict[str, float]:
    """The job's own lower bound: its frames drawn alone on one core, the same frames and its
    speech encoded alone (one x264 thread, as in the pipeline), the two overlapped on two cores."""
    import cv2

    from .encode.hls import HlsEncoder
    from .jobs.folder import Job
    from .personas import load_persona
    from .pipeline import Request
    from .render.stage import load_job_portrait
    from .speech import read_wav

    job = Job.open(job_id, root)
    request = Request(**job.read_json("request.json"))
    animator = load_job_portrait(job, load_persona(request.persona), request).animator
    coeffs = job.read_array("motion_governed.npy").astype("float32")
    audio, rate = read_wav(job.path("audio.wav"))
    from .encode.encoder import rgb_to_yuv

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        start = time.perf_counter()
        frames = [rgb_to_yuv(animator.render_frame(row)) for row in coeffs]
        render_s = time.perf_counter() - start
    finally:
        cv2.setNumThreads(threads)
    with tempfile.TemporaryDirectory(prefix="persona-bench-encode-") as scratch:
        start = time.perf_counter()
        with HlsEncoder(Path(scratch) / "stream", animator.width, animator.height, sample_rate=rate) as encoder:
            encoder.write_audio(audio)
            for frame in frames:
                encoder.write_yuv(frame)
            encoder.close()
        encoder.finish(Path(scratch) / "video.mp4")
        encode_s = time.perf_counter() - start
    # two cores: the drawing can be shared out, the one x264 thread cannot
    return {
        "render_only_s": render_s,
        "encode_only_s": encode_s,
        "lower_bound_s": max((render_s + encode_s) / 2, encode_s),
    }


def _render_fps_one_core() -> float:
    from .render import bench_render

    return float(bench_render(num_frames=250)["frames_per_s"])


def _bench_local_stream(root: Path) -> dict:
    """The streamed job with the local model writing: first segment and whole job after Generate,
    against the writer's own time."""
    os.environ["PERSONA_VIDEO_LLM_GGUF"] = str(bench_model_path())
    try:
        times = _one_run(root, prompt=LOCAL_BENCH_PROMPT, script_backend="local")
    finally:
        os.environ.pop("PERSONA_VIDEO_LLM_GGUF", None)
    return {
        "first_video_s": round(times.get("first_video_s", float("nan")), 3),
        "first_sentence_s": round(times.get("first_sentence_s", float("nan")), 3),
        "first_video_after_first_sentence_s": round(
            times.get("first_video_s", float("nan")) - times.get("first_sentence_s", float("nan")), 3
        ),
        "writer_s": round(times["script"], 3),
        "job_s": round(times["pipeline_warm_s"], 3),
        "job_after_writer_s": round(times["pipeline_warm_s"] - times["script"], 3),
        "audio_s": round(times.get("audio_s", 0.0), 2),
    }


def run_bench(repeat: int = 3, *, local_model: bool = True) -> dict:
    """Measure everything; returns a dict of figures, ratios and the targets they are held to."""
    import cv2

    from .jobs.folder import Job
    from .pipeline import rerender

    cold = _cold_start_s()
    template = {"prompt": BENCH_PROMPT, "script_backend": "offline"}
    with tempfile.TemporaryDirectory(prefix="persona-bench-") as scratch:
        root = Path(scratch)
        _one_run(root, **template)  # warm-up: loads voices, face mesh, animator
        runs = [_one_run(root, **template) for _ in range(max(1, repeat))]
        job_id = runs[-1]["job_id"]
        bounds = [_lower_bound(root, run["job_id"]) for run in runs]
        first_render_s = float(Job.open(job_id, root).manifest["stages"]["video"]["seconds"])
        rerender_times = {}
        for name, change in RERENDER_CHANGES:
            cpu = _cpu_s()
            start = time.perf_counter()
            first_chunk_s = None
            for event in rerender(job_id, change, root=root):
                if event.stage == "chunk" and first_chunk_s is None:
                    first_chunk_s = time.perf_counter() - start
            seconds = time.perf_counter() - start
            rerender_times[name] = (seconds, first_chunk_s, (_cpu_s() - cpu) / seconds)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        fps = _render_fps_one_core()
    finally:
        cv2.setNumThreads(threads)
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0] if key != "job_id"}
    ratios = [r["pipeline_warm_s"] / b["lower_bound_s"] for r, b in zip(runs, bounds, strict=True)]
    bound = {key: statistics.median(b[key] for b in bounds) for key in bounds[0]}
    audio_s = median["audio_s"]
    worst = max(seconds for seconds, _, _ in rerender_times.values())
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "audio_s": round(audio_s, 2),
        "stages_s": {
            k: round(median[k], 3) for k in ("script", "speech", "motion", "governor", "video") if k in median
        },
        "first_audio_s": round(median.get("first_video_s", float("nan")), 3),
        "first_video_s": round(median.get("first_video_s", float("nan")), 3),
        "pipeline_warm_s": round(median["pipeline_warm_s"], 3),
        **{key: round(value, 3) for key, value in bound.items()},
        "pipeline_vs_lower_bound": round(statistics.median(ratios), 3),
        "real_time_factor": round(median["pipeline_warm_s"] / audio_s, 3),
        "cores_busy": round(median["cores_busy"], 2),
        "first_render_s": round(first_render_s, 3),
        "rerender_vs_first_render": round(worst / first_render_s, 3),
        "rerender_by_change": {
            name: {
                "seconds": round(seconds, 3),
                "vs_first_render": round(seconds / first_render_s, 3),
                "first_segment_s": None if first is None else round(first, 3),
                "cores_busy": round(busy, 2),
            }
            for name, (seconds, first, busy) in rerender_times.items()
        },
        "cold_start_s": round(cold, 3),
        "render_fps_one_core": round(fps, 1),
        "peak_memory_mb": round(_peak_rss_mb(), 1),
        "targets": TARGETS,
    }
    if local_model:
        report.update(_local_model_report())
    return report


def _local_model_report() -> dict:
    """The local script model's figures, measured in a fresh process as the app has it: warmed up
    (voices, portraits, a first sentence drawn), then one streamed job with the model writing, then
    the writer alone. Its peak memory is that app's: the model and one job, not the jobs and
    frame lists this benchmark made before."""
    import json

    bench_model_path()  # written here, once: writing it holds its tensors, which are not the app's memory
    code = "import json; from persona_video import bench; print(json.dumps(bench._local_model_figures()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the local model's benchmark failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _local_model_figures() -> dict:
    from .server import warm_up

    # the app's start: voices, portraits, a first sentence per persona, then the script model
    # loaded with each persona's system prompt in its cache (timed)
    warm_up(script_model=False)
    load = bench_local_load()
    with tempfile.TemporaryDirectory(prefix="persona-bench-local-") as scratch:
        stream = {**_bench_local_stream(Path(scratch)), "targets": LOCAL_STREAM_TARGETS}
    return {"local_stream": stream, "local_writer": {**load, **bench_local_writer(), "targets": LOCAL_TARGETS}}


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
    notes = {
        "first_audio_s": "the first stream segment (sound and picture) playable, after Generate",
        "first_video_s": "the same segment",
        "pipeline_vs_lower_bound": (
            f"job {report['pipeline_warm_s']} s; lower bound {report['lower_bound_s']} s "
            f"(render alone {report['render_only_s']} s, encode alone {report['encode_only_s']} s); "
            f"{report['cores_busy']} of {report['machine']['cpus']} cores busy through the job"
        ),
        "real_time_factor": f"job {report['pipeline_warm_s']} s for {report['audio_s']} s of speech",
        "rerender_vs_first_render": f"slowest re-render against the first render's {report['first_render_s']} s",
    }
    for key, target in TARGETS.items():
        value = report[key]
        higher = key == "render_fps_one_core"
        met = value >= target if higher else value <= target
        unit = {"render_fps_one_core": " frames/s", "peak_memory_mb": " MB"}.get(key, "" if "_vs_" in key else " s")
        unit = "" if key == "real_time_factor" else unit
        sign = "≥" if higher else "≤"
        note = f" ({notes[key]})" if key in notes else ""
        lines.append(f"| {key} | {value}{unit}{note} | {sign} {target}{unit} {'✓' if met else '✗'} |")
    for name, figures in report.get("rerender_by_change", {}).items():
        first = figures["first_segment_s"]
        first_text = (
            f", first segment after {first:.3f} s, {figures['cores_busy']} cores busy"
            if first is not None
            else ", nothing drawn"
        )
        lines.append(
            f"| re-render, {name} | {figures['seconds']:.3f} s = {figures['vs_first_render']} × first render"
            f"{first_text} | ≤ 0.5 × |"
        )
    stream = report.get("local_stream")
    if stream:
        lines += [
            "",
            f"Streamed job with the local script model: writer {stream['writer_s']} s, job {stream['job_s']} s, "
            f"{stream['audio_s']} s of speech; its first sentence released after {stream['first_sentence_s']} s, "
            f"the first segment {stream['first_video_after_first_sentence_s']} s after that",
            "",
            "| figure | measured | target |",
            "|---|---|---|",
        ]
        for key, target in LOCAL_STREAM_TARGETS.items():
            value = stream[key]
            lines.append(f"| {key} | {value} s | ≤ {target} s {'✓' if value <= target else '✗'} |")
    local = report.get("local_writer")
    if local:
        lines += [
            "",
            f"Local script model: {local['model']} (random weights, the default model's shapes), "
            f"loaded in {local['load_s']} s; system prompt {local['system_prompt_tokens']} tokens a persona, "
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
