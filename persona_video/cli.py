"""Command line: ``python -m persona_video COMMAND`` (or ``persona-video COMMAND``).

speak     script + speech only: script.txt, script.json, audio.wav, timing.json into --out
generate  the whole pipeline: a job folder under outputs/ and, with -o, a copy of the MP4
rerender  new governor settings on a finished job (reuses its audio and motion)
personas  list the personas
bench     per-stage timings, real-time factor, renderer frames/s, peak memory
doctor    which backends can run here, and why not; which weights files are here, verified; per
          deployment kind (CPU, GPU machine or Docker, ZeroGPU Space), what is missing and its fix
fetch     download weights files, verified: fetch llm | llm-small | xtts | sadtalker | gfpgan | all
worker    take jobs from the broker (PERSONA_VIDEO_BROKER) and run them
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .errors import PersonaVideoError


def _add_script_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--persona", default="mkbhd", help="persona id (see `personas`), default mkbhd")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="what the video should explain")
    source.add_argument("--script", help="speak this script instead (markup honoured, plain text annotated)")
    parser.add_argument("--temperature", type=float, help="LLM temperature 0..2 (default: the persona's)")
    parser.add_argument("--max-tokens", type=int, help="script length bound 16..2048 (default: the persona's)")
    parser.add_argument("--seed", type=int, default=0, help="fixes the offline writer, pauses, blinks, head drift")
    parser.add_argument("--voice", help="heart (US female) or joe (US male); default: the persona's")
    parser.add_argument("--speed", type=float, help="speaking rate 0.5..2 (default: the persona's)")
    parser.add_argument("--script-backend", default="auto", help="auto | local | ollama | openai | gemini | offline")
    parser.add_argument("--speech-backend", default="auto", help="auto | hibari | piper | xtts")


def _governor_overrides(values: list[str] | None) -> dict:
    overrides: dict = {}
    for item in values or []:
        if "=" not in item:
            raise PersonaVideoError(f"--governor {item!r}: write NAME=VALUE, e.g. --governor pause_gain=0.6")
        name, value = item.split("=", 1)
        overrides[name.strip()] = (
            value.strip().lower() in ("1", "true", "yes", "on") if name.strip() == "enabled" else float(value)
        )
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="persona-video", description="Prompt to talking-head explainer video.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")
    sub = parser.add_subparsers(dest="command", required=True)

    speak = sub.add_parser("speak", help="write the script and speak it (no video)")
    _add_script_options(speak)
    speak.add_argument("--out", required=True, type=Path, help="folder for script.txt/json, audio.wav, timing.json")

    generate = sub.add_parser("generate", help="the whole pipeline to an MP4")
    _add_script_options(generate)
    generate.add_argument("-o", "--output", type=Path, help="also copy the MP4 here")
    generate.add_argument("--portrait", type=Path, help="your own portrait (one frontal face)")
    generate.add_argument("--framing", default="crop", help="crop (512x512 head and shoulders) | full (whole portrait)")
    generate.add_argument("--still", action="store_true", help="hold the head, animate only the face")
    generate.add_argument("--governor", action="append", metavar="NAME=VALUE", help="governor setting (repeatable)")
    generate.add_argument("--motion-backend", default="auto", help="auto | embedded | sadtalker")
    generate.add_argument("--enhancer", default="auto", help="auto | none | gfpgan")

    rerender = sub.add_parser("rerender", help="re-render a job with new governor settings")
    rerender.add_argument("job", help="job id or its folder (outputs/persona_<id>)")
    rerender.add_argument("--governor", action="append", metavar="NAME=VALUE", help="governor setting (repeatable)")
    rerender.add_argument("-o", "--output", type=Path, help="also copy the MP4 here")

    sub.add_parser("personas", help="list the personas")
    bench = sub.add_parser("bench", help="time every stage on a ~25 s script")
    bench.add_argument("--repeat", type=int, default=3, help="warm runs to take the median of")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.add_argument(
        "--no-local-model",
        action="store_true",
        help="skip the local script model (it writes a 1 GB random-weight GGUF into the temp folder once)",
    )
    bench.add_argument(
        "--broker", action="store_true", help="only the broker's overhead per job over the in-process queue"
    )
    sub.add_parser("doctor", help="which backends can run here, which weights are here")
    fetch = sub.add_parser("fetch", help="download weights, verified (progress on stderr)")
    fetch.add_argument(
        "names", nargs="+", metavar="NAME", help="llm, llm-small, xtts, sadtalker, gfpgan, all, or a file"
    )
    fetch.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a download stalls")
    fetch.add_argument("--retries", type=int, default=2, help="resumed attempts after a cut or a stall (default 2)")
    worker = sub.add_parser("worker", help="run jobs from the broker (PERSONA_VIDEO_BROKER=redis://...)")
    worker.add_argument(
        "--queue", default="cpu", help="cpu (embedded backends), gpu (needs a heavy backend here) or cpu,gpu"
    )
    worker.add_argument("-c", "--concurrency", type=int, default=1, help="jobs at once (default 1)")
    return parser


def _request_from(args: argparse.Namespace):
    from .types import Request

    return Request(
        persona=args.persona,
        prompt=args.prompt,
        script=args.script,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        seed=args.seed,
        voice=args.voice,
        speed=args.speed,
        script_backend=args.script_backend,
        speech_backend=args.speech_backend,
        **(
            {
                "portrait": str(args.portrait) if args.portrait else None,
                "framing": args.framing,
                "still": args.still,
                "governor": _governor_overrides(args.governor),
                "motion_backend": args.motion_backend,
                "enhancer": args.enhancer,
            }
            if args.command == "generate"
            else {}
        ),
    )


def cmd_speak(args: argparse.Namespace) -> int:
    from .jobs.folder import write_json_atomic
    from .personas import load_persona
    from .script import script_from_text, write_script
    from .speech import synthesize_with_intent, write_wav

    persona = load_persona(args.persona)
    if args.script is not None:
        script = script_from_text(args.script, persona)
    else:
        script = write_script(
            args.prompt,
            persona,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            seed=args.seed,
            backend=args.script_backend,
        )
    speech = synthesize_with_intent(
        script.intent, persona, voice=args.voice, backend=args.speech_backend, speed=args.speed, seed=args.seed
    )
    # everything is written to a scratch folder first, then moved in: no half-written output
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out, prefix=".partial-") as scratch:
        tmp = Path(scratch)
        (tmp / "script.txt").write_text(script.markup + "\n", encoding="utf-8")
        write_json_atomic(
            tmp / "script.json", {"backend": script.backend, "notice": script.notice, **script.intent.to_dict()}
        )
        write_wav(tmp / "audio.wav", speech.audio, speech.sample_rate)
        write_json_atomic(tmp / "timing.json", speech.timing.to_dict())
        for name in ("script.txt", "script.json", "audio.wav", "timing.json"):
            os.replace(tmp / name, args.out / name)
    print(f"script: {script.backend}" + (f" ({script.notice})" if script.notice else ""))
    print(
        f"speech: {speech.backend} voice {speech.voice}, {speech.duration_s:.2f} s, {speech.timing.num_frames} frames"
    )
    print(f"wrote {args.out}/script.txt, script.json, audio.wav, timing.json")
    return 0


def _print_draft(event, shown: int) -> int:
    """The script as it is written: one stderr line per newly finished sentence (stdout
    stays the stage summary). Returns how many sentences have been shown."""
    from .script import to_markup

    for sentence in event.result.sentences[shown:]:
        print(f"  writing ({event.backend}): {to_markup(sentence)}", file=sys.stderr, flush=True)
    return len(event.result.sentences)


def _print_event(event) -> None:
    if event.stage == "done":
        print(f"done in {event.seconds:.2f} s: {event.result.folder}")
        return
    backend = event.backend + (f" ({event.result.model})" if event.stage == "script" and event.result.model else "")
    line = f"{event.stage:9s} {backend:10s} {event.seconds:6.2f} s"
    if event.notice:
        line += f"  ({event.notice})"
    print(line, flush=True)


def _finish(job_folder: Path, output: Path | None) -> None:
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.tmp")
        shutil.copyfile(job_folder / "video.mp4", tmp)
        os.replace(tmp, output)
        print(f"video: {output}")
    else:
        print(f"video: {job_folder / 'video.mp4'}")


def _drive(events, output: Path | None) -> int:
    """Print each stage as it finishes, then say (or copy) where the video is."""
    folder = None
    shown = 0
    for event in events:
        if event.stage == "script_draft":
            shown = _print_draft(event, shown)
            continue
        if event.stage == "chunk":  # the first segment: the stream can be watched from here on
            if event.result.index == 0:
                playlist = event.result.path.parent / "stream.m3u8"
                line = f"streaming {event.seconds:6.2f} s  first segment; play it as it grows: {playlist}"
                print(line, file=sys.stderr)
            continue
        _print_event(event)
        if event.stage == "done":
            folder = event.result.folder
    _finish(folder, output)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .pipeline import run

    return _drive(run(_request_from(args)), args.output)


def cmd_rerender(args: argparse.Namespace) -> int:
    from .pipeline import rerender

    job_id = Path(args.job).name.removeprefix("persona_")
    root = Path(args.job).resolve().parent if os.sep in args.job or args.job.startswith("persona_") else None
    return _drive(rerender(job_id, _governor_overrides(args.governor), root=root), args.output)


def cmd_personas(args: argparse.Namespace) -> int:
    from .personas import list_personas

    for persona in list_personas():
        print(f"{persona.id:10s} {persona.name}: {persona.description}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.broker:
        from .jobs.bench import format_broker, run_broker_bench

        report = run_broker_bench(jobs=max(3, 4 * args.repeat))
        print(json.dumps(report, indent=2) if args.json else format_broker(report))
        return 0
    from .bench import format_table, run_bench

    report = run_bench(repeat=args.repeat, local_model=not args.no_local_model)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .weights.deployments import deployment_report, format_deployments
    from .weights.doctor import doctor_report, format_doctor, format_weights
    from .weights.registry import weights_report

    print(format_doctor(doctor_report()))
    print()
    print(format_weights(weights_report()))
    print()
    print(format_deployments(deployment_report()))
    return 0


class ProgressBar:
    """A fetch's progress on a stream (stderr): one redrawn line on a terminal, a line per 10 % elsewhere."""

    WIDTH = 30

    def __init__(self, stream) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last_draw_s = 0.0
        self.last_key: tuple = ()

    def __call__(self, progress) -> None:
        share = progress.file_done / progress.file_total if progress.file_total else 1.0
        verb = "checking" if progress.phase == "verifying" else "fetching"
        overall = f", all {progress.fraction * 100:5.1f} %" if progress.total and progress.phase != "verifying" else ""
        filled = int(self.WIDTH * share)
        line = (
            f"{verb} {progress.name} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {share * 100:5.1f} % "
            f"({progress.file_done / 1e6:,.1f} of {progress.file_total / 1e6:,.1f} MB{overall})"
        )
        if self.tty:
            now = time.monotonic()
            if now - self.last_draw_s >= 0.1 or share >= 1.0:
                self.stream.write("\r" + line)
                self.stream.flush()
                self.last_draw_s = now
            return
        key = (progress.name, progress.phase, int(share * 10))
        if key != self.last_key:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_key = key

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def cmd_fetch(args: argparse.Namespace) -> int:
    from .weights.fetch import fetch

    bar = ProgressBar(sys.stderr)
    try:
        results = fetch(args.names, progress=bar, read_timeout_s=args.timeout, retries=args.retries)
    finally:
        bar.close()
    for result in results:
        print(f"{result.name:26s} {result.action:10s} {result.path}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .jobs.worker_process import worker_main

    queues = [queue.strip() for queue in args.queue.split(",") if queue.strip()]
    return worker_main(queues, args.concurrency, "DEBUG" if args.verbose else "INFO")


COMMANDS = {
    "speak": cmd_speak,
    "generate": cmd_generate,
    "rerender": cmd_rerender,
    "personas": cmd_personas,
    "bench": cmd_bench,
    "doctor": cmd_doctor,
    "fetch": cmd_fetch,
    "worker": cmd_worker,
}


def main(argv: list[str] | None = None) -> int:
    # MediaPipe's native logging goes straight to stderr; keep the CLI's output readable
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
    except PersonaVideoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
