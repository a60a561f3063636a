"""The local script model on the real llama.cpp (xllamacpp), with a random-weight GGUF
the tests write: every model yields parseable sentences under the markup grammar, the
drafts grow into the final script, the persona's settings reach llama.cpp, cancel
stops it, and bad files are clear errors that fall through to the next writer."""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from pathlib import Path

import pytest

from persona_video.errors import BackendUnavailable, Cancelled, InputError
from persona_video.personas import load_persona
from persona_video.script import parse_markup, plan_writer, script_from_text, stream_script, to_markup, write_script
from persona_video.script.local import WRITER_NICE, _yielding, inspect_gguf, load_local_model, render_chat
from persona_video.script.local_writer import (
    MAX_SENTENCE_WORDS,
    OPENING_MIN_WORDS,
    OPENING_WORDS,
    markup_grammar,
    markup_instruction,
    write_tokens,
    write_with_local,
)
from persona_video.script.random_gguf import TINY, write_model

HEAT_PUMP = "How does a heat pump keep a house warm in winter?"


def _env(path: Path) -> dict[str, str]:
    return {"PERSONA_VIDEO_LLM_GGUF": str(path)}


def test_auto_picks_the_local_model_when_a_gguf_is_given(tiny_gguf):
    plan = plan_writer("auto", _env(tiny_gguf))
    assert plan.name == "local" and plan.model == tiny_gguf.name and "present" in plan.why


def test_the_local_model_writes_sentences_that_parse_and_grow_into_the_script(tiny_gguf):
    persona = load_persona("mkbhd")
    drafts = list(stream_script(HEAT_PUMP, persona, env=_env(tiny_gguf), seed=3))
    final = drafts[-1]
    assert final.script is not None and final.script.backend == "local"
    assert final.script.model == tiny_gguf.name and final.script.notice == ""
    # a retry (the first attempt was off topic) starts its text afresh; nothing of a discarded
    # attempt was released as a sentence
    attempts: list[list] = [[]]
    for draft in drafts[:-1]:
        if attempts[-1] and not draft.text.startswith(attempts[-1][-1].text):
            attempts.append([])
        attempts[-1].append(draft)
    assert len(attempts) <= 2 and all(not d.sentences for attempt in attempts[:-1] for d in attempt)
    growing = attempts[-1]
    assert len(growing) >= 2
    for before, after in zip(growing, growing[1:]):
        assert after.text.startswith(before.text)  # text only grows
        assert after.sentences[: len(before.sentences)] == before.sentences  # sentences only append
    # every sentence is valid markup, and the script is exactly its sentences in order
    for sentence in final.sentences:
        assert parse_markup(to_markup(sentence)) == sentence and sentence.spoken_text
    assert parse_markup(final.script.markup) == final.script.intent
    # the finished script, cut into sentences, gives back the very sentences streamed before it
    assert final.sentences == growing[-1].sentences
    # what was streamed adds up to what is spoken: each sentence's words are in the streamed text, in order
    streamed = growing[-1].text.replace("*", "")
    position = 0
    for sentence in final.sentences:
        first_word = sentence.spoken_text.split()[0].strip(",.!?")
        found = streamed.find(first_word, position)
        assert found >= position, (first_word, streamed[position : position + 80])
        position = found
    # the persona's emphasis budget holds in every sentence
    for sentence in final.sentences:
        assert sum(seg.intent_type == "emphasis" for seg in sentence.segments) <= persona.script.emphasis_words[1]


def test_max_tokens_and_temperature_reach_llama_cpp(tiny_gguf):
    persona = load_persona("ijustine")
    model = load_local_model(tiny_gguf)
    pieces = list(write_with_local(HEAT_PUMP, persona, temperature=0.8, max_tokens=24, seed=1, model_path=tiny_gguf))
    assert pieces and model.timings.predicted_tokens <= 24
    # temperature 0 is greedy: the seed no longer matters; at 1.2 two seeds write different text
    greedy = [
        "".join(write_with_local(HEAT_PUMP, persona, temperature=0.0, max_tokens=40, seed=s, model_path=tiny_gguf))
        for s in (1, 2)
    ]
    assert greedy[0] == greedy[1]
    hot = [
        "".join(write_with_local(HEAT_PUMP, persona, temperature=1.2, max_tokens=40, seed=s, model_path=tiny_gguf))
        for s in (1, 2)
    ]
    assert hot[0] != hot[1]


def test_the_first_sentence_is_short_so_the_video_starts_soon(tiny_gguf):
    # random weights run a sentence on to what the grammar allows: the opening stops at its
    # limit, later sentences go past it; a starred name counts as one word
    persona = load_persona("mkbhd")
    firsts, later = [], []
    for seed in (1, 2, 3):
        text = "".join(
            write_with_local(HEAT_PUMP, persona, temperature=0.8, max_tokens=400, seed=seed, model_path=tiny_gguf)
        )
        sentences = re.findall(r"[^.!?]+[.!?]", text.replace("[pause]", ""))
        words = [len(re.findall(r"\*[^*]+\*|[^\s*]+", sentence)) for sentence in sentences]
        assert len(words) >= 2, text
        firsts.append(words[0])
        later += words[1:]
    assert OPENING_MIN_WORDS <= min(firsts) and max(firsts) <= OPENING_WORDS < max(later) <= MAX_SENTENCE_WORDS
    assert f"of {OPENING_MIN_WORDS} to {OPENING_WORDS} words" in markup_instruction(persona)


def test_the_instructions_example_is_markup_the_grammar_admits() -> None:
    # what the model is shown is what the grammar lets it write: a pause only after a sentence
    # end, an opening of OPENING_MIN_WORDS to OPENING_WORDS pieces (a starred name is one)
    example = markup_instruction(load_persona("mkbhd")).split("Example: ", 1)[1]
    sentence = r"[A-Za-z0-9*,' -]+[.!?]( \[pause\])?"
    assert re.fullmatch(rf"{sentence}( {sentence})*", example), example
    opening = re.match(r"[^.!?]+", example).group(0)
    assert OPENING_MIN_WORDS <= len(re.findall(r"\*[^*]+\*|[^\s*]+", opening)) <= OPENING_WORDS


def test_a_random_model_padded_with_made_up_words_writes_about_a_token_a_word(tmp_path):
    # the benchmark's model: a real vocabulary is mostly whole words with a leading space, and
    # random text over one costs about a token a word; padded with unused tokens, random words
    # glue pieces together and cost several
    shape = dataclasses.replace(TINY, vocab=8192)
    cost = {}
    for filler in (False, True):
        path = write_model(tmp_path / f"filler-{filler}.gguf", shape, seed=0, merge_words=True, word_filler=filler)
        model = load_local_model(path)
        text = "".join(
            model.complete(
                render_chat(model.file, "Write a script.", "Tell me about it."),
                grammar=markup_grammar(6),
                temperature=0.8,
                max_tokens=120,
                seed=1,
                cache_key="filler",
            )
        )
        cost[filler] = model.timings.predicted_tokens / len(text.split())
    assert cost[True] <= 1.5 < cost[False], cost


def test_the_persona_system_prompt_is_evaluated_once_and_cached(tiny_gguf):
    persona = load_persona("mkbhd")
    model = load_local_model(tiny_gguf)
    list(write_with_local(HEAT_PUMP, persona, temperature=0.6, max_tokens=8, seed=1, model_path=tiny_gguf))
    list(write_with_local("Explain black holes", persona, temperature=0.6, max_tokens=8, seed=1, model_path=tiny_gguf))
    system_tokens = len(render_chat(model.file, markup_instruction(persona), "").split())  # words: a lower bound
    assert model.timings.cached_tokens >= system_tokens
    # the user turn ends with the topic, so all but the topic and the turn's end came from the cache
    # (characters: at least one each in this byte-level vocabulary)
    assert model.timings.prompt_tokens <= len("Explain black holes<|im_end|>\n<|im_start|>assistant\n")


def test_the_weights_are_read_into_memory_not_left_mapped(tiny_gguf):
    # llama.cpp repacks the weights into memory of its own; a mapping of the file kept the
    # original pages resident beside them (half a gigabyte for the default model)
    model = load_local_model(tiny_gguf)
    list(model.complete("Hello", grammar="", temperature=0.0, max_tokens=2, seed=1, cache_key="maps"))
    mapped = Path("/proc/self/maps").read_text()
    assert str(Path(tiny_gguf).resolve()) not in mapped


def _thread_cpu_and_nice() -> dict[int, tuple[int, int]]:
    """This process's threads: id -> (CPU ticks used, nice value), from /proc."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended since the folder was listed
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12]), int(fields[16]))
    return out


def test_the_model_computes_at_a_lower_priority_than_the_video(tiny_gguf):
    # beside a streamed job the speech, renderer and encoder come first: the threads llama.cpp
    # computes in are niced, the process's own threads are not
    model = load_local_model(tiny_gguf)
    before = _thread_cpu_and_nice()
    list(model.complete("Hello there", grammar="", temperature=0.0, max_tokens=200, seed=1, cache_key="nice"))
    after = _thread_cpu_and_nice()
    used = {tid: after[tid][0] - before.get(tid, (0, 0))[0] for tid in after}
    busiest = max(used, key=used.get)
    assert used[busiest] > 0 and after[busiest][1] == WRITER_NICE
    assert os.getpriority(os.PRIO_PROCESS, 0) == 0 and after[threading.get_native_id()][1] == 0


def test_the_writer_priority_is_set_in_a_thread_of_its_own(monkeypatch):
    assert _yielding(lambda: os.getpriority(os.PRIO_PROCESS, 0)) == WRITER_NICE
    monkeypatch.setenv("PERSONA_VIDEO_LLM_NICE", "3")
    assert _yielding(lambda: os.getpriority(os.PRIO_PROCESS, 0)) == 3
    monkeypatch.setenv("PERSONA_VIDEO_LLM_NICE", "0")
    assert _yielding(lambda: os.getpriority(os.PRIO_PROCESS, 0)) == 0
    assert os.getpriority(os.PRIO_PROCESS, 0) == 0  # the caller's own priority is untouched
    monkeypatch.setenv("PERSONA_VIDEO_LLM_NICE", "high")
    with pytest.raises(BackendUnavailable, match="PERSONA_VIDEO_LLM_NICE"):
        _yielding(lambda: None)
    monkeypatch.delenv("PERSONA_VIDEO_LLM_NICE")
    with pytest.raises(RuntimeError, match="bad file"):  # what the load raises reaches the caller
        _yielding(lambda: (_ for _ in ()).throw(RuntimeError("bad file")))


def test_cancel_stops_the_model_and_it_serves_the_next_request(tiny_gguf):
    cancel = threading.Event()
    persona = load_persona("mkbhd")
    drafts = stream_script(HEAT_PUMP, persona, env=_env(tiny_gguf), seed=5, max_tokens=1200, cancel=cancel)
    first = next(drafts)
    assert first.script is None
    cancel.set()
    with pytest.raises(Cancelled):
        list(drafts)
    model = load_local_model(tiny_gguf)
    assert model.timings.predicted_tokens < write_tokens(1200)  # llama.cpp stopped early
    script = write_script(HEAT_PUMP, persona, env=_env(tiny_gguf), seed=5, max_tokens=200)
    assert script.backend == "local"


def test_a_script_off_the_topic_is_retried_then_the_template_says_why(tiny_gguf):
    # the tiny model's words hold none of this prompt's: both attempts are off topic
    script = write_script("Explain quantum chromodynamics", load_persona("mkbhd"), env=_env(tiny_gguf))
    assert script.backend == "offline"
    assert "could not be used" in script.notice and "did not mention the topic" in script.notice
    assert "offline writer" in script.notice


def test_a_missing_gguf_path_is_an_error_that_names_the_variable(tmp_path):
    with pytest.raises(BackendUnavailable, match="PERSONA_VIDEO_LLM_GGUF"):
        plan_writer("auto", _env(tmp_path / "nope.gguf"))


@pytest.mark.parametrize("damage", ["not_gguf", "truncated", "unknown_architecture"])
def test_a_bad_model_file_is_a_clear_error_and_auto_falls_through(tiny_gguf, tmp_path, damage):
    bad = tmp_path / "bad.gguf"
    if damage == "not_gguf":
        bad.write_bytes(b"<html>not found</html>" * 10)
        expected = "is not a GGUF model file"
    elif damage == "truncated":
        data = tiny_gguf.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        expected = "not a complete GGUF file"
    else:
        import gguf

        writer = gguf.GGUFWriter(str(bad), "nosuchnet")
        writer.add_chat_template("{{ messages[0]['content'] }}")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        expected = "architecture 'nosuchnet'"
    with pytest.raises(BackendUnavailable, match=expected) as error:
        load_local_model(bad)
    assert str(bad) in str(error.value) and "fetch llm" in str(error.value)
    script = write_script(HEAT_PUMP, load_persona("mkbhd"), env=_env(bad))
    assert script.backend == "offline" and expected in script.notice and "offline writer" in script.notice


def test_inspect_reads_the_files_own_chat_template(tiny_gguf):
    model = inspect_gguf(tiny_gguf)
    assert model.architecture == "qwen2" and "<|im_start|>" in model.chat_template
    text = render_chat(model, "SYSTEM", "USER")
    assert text.startswith("<|im_start|>system\nSYSTEM<|im_end|>") and text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("text", ["黑洞是怎么形成的？", "كيف تعمل المضخة الحرارية؟"])
def test_a_prompt_or_script_the_voices_cannot_say_is_refused(text):
    persona = load_persona("mkbhd")
    with pytest.raises(InputError, match="the voices speak English"):
        write_script(text, persona, env={})
    with pytest.raises(InputError, match="the voices speak English"):
        script_from_text(text, persona)
