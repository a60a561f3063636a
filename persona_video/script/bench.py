"""The local script model's benchmark (``python -m persona_video bench``): load, prefill and
decode speed, the first sentence and a 120-word script, on a random-weight GGUF of the default
model's exact shapes (no model can be downloaded where the benchmark must run)."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

#: The local script model's targets (DESIGN.md): on a random-weight GGUF of the default model's shapes.
LOCAL_TARGETS = {
    "first_sentence_s": 1.5,
    "script_120_words_s": 8.0,
    "peak_memory_with_model_mb": 2500.0,
}
#: The prompt the local model writes for. It names no topic word: a script is held back until it
#: names the prompt's topic, which random weights do only by luck (a model that follows the
#: instruction does it in its first sentence), so a topic here would time the luck, not the pipeline.
LOCAL_BENCH_PROMPT = "Tell me about it, please."
#: Markup tokens of a 120-word script (about 1.6 tokens a word: the words, stars and pauses).
SCRIPT_120_WORDS_TOKENS = 192


def bench_model_path() -> Path:
    """The benchmark's random-weight GGUF of Qwen2.5-1.5B-Instruct's shapes (Q4_K/Q6_K, about
    1 GB), written once into the temp folder and reused."""
    import hashlib
    import re

    from ..personas import list_personas
    from .local_writer import markup_instruction
    from .random_gguf import QWEN25_15B, TINY_WORDS, write_model

    # the words of the system prompts are whole tokens, so the prompts cost as many tokens as with Qwen's
    # own vocabulary (about one a word), not one a byte; the file is named after them, so a changed
    # prompt writes a new one
    text = " ".join(markup_instruction(p) for p in list_personas())
    words = tuple(dict.fromkeys([*re.findall(r"[A-Za-z]+", text), *TINY_WORDS]))
    digest = hashlib.sha256(" ".join(["word-filler", *words]).encode()).hexdigest()[:10]
    folder = Path(tempfile.gettempdir()) / "persona-video-bench"
    path = folder / f"qwen2.5-1.5b-shapes-random-q4k-{digest}.gguf"
    if not path.is_file():
        for stale in folder.glob("qwen2.5-1.5b-shapes-random-*.gguf"):
            stale.unlink()  # a gigabyte each, written for an earlier prompt
        partial = path.with_suffix(".partial")
        write_model(
            partial,
            QWEN25_15B,
            seed=0,
            words=words,
            merge_words=True,
            word_filler=True,  # random text costs about a token a word, as real text does
            name="random, Qwen2.5-1.5B shapes",
        )
        partial.replace(path)
    return path


def bench_local_load() -> dict:
    """The model's part of the server's warm-up, timed: the load, then each persona's system
    prompt evaluated into its slot's cache (as ``server.warm_script_model`` does)."""
    from ..personas import list_personas
    from .local import load_local_model
    from .local_writer import warm_local

    path = bench_model_path()
    start = time.perf_counter()
    model = load_local_model(path)
    load_s = time.perf_counter() - start
    prompt_tokens, prefill_s = 0, 0.0
    for persona in list_personas():
        warm_local(persona, path)
        prompt_tokens += model.timings.prompt_tokens
        prefill_s += model.timings.prompt_tokens / max(model.timings.prompt_per_s, 1e-9)
    return {
        "model": path.name,
        "load_s": round(load_s, 3),
        "system_prompt_tokens": prompt_tokens // max(len(list_personas()), 1),
        "prefill_tokens_per_s": round(prompt_tokens / max(prefill_s, 1e-9), 1),
    }


def bench_local_writer() -> dict:
    """Decode speed, time to the first sentence and to a 120-word script, on the default
    model's shapes with the system prompts cached (``bench_local_load`` first), as in the app."""
    from ..personas import load_persona
    from . import stream_script
    from .local import load_local_model, render_chat
    from .local_writer import length_request, markup_grammar, markup_instruction

    path = bench_model_path()
    persona = load_persona("mkbhd")
    model = load_local_model(path)
    prompt = LOCAL_BENCH_PROMPT
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
        "decode_tokens_per_s": round(decode.predicted_per_s, 1),
        "cached_prompt_tokens": decode.cached_tokens,
        "first_sentence_s": round(first_sentence_s or float("nan"), 3),
        "first_sentence_words": words,
        "script_120_words_s": round(script_s, 3),
        "script_tokens": decode.predicted_tokens,
        "peak_memory_with_model_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }
