"""The script writer on the local model: the persona's instruction in the script
markup, a grammar that holds the model to that markup, and the token stream.

The model writes canonical markup directly (``So, this new *M4 Mac Mini* is fast.
[pause]``): a stressed word costs two star tokens and a pause three, where the
segments JSON costs about a dozen tokens per segment, and the text can go to
the script box as it is written. The grammar admits whole sentences of plain
words (letters, digits, apostrophes and hyphens), commas, ``*stressed words*``
and ``[pause]`` after a sentence end; no lists, markdown, emoji or symbols can
come out, and a sentence always ends within 25 words. The first sentence has
8 to 12: it is what the viewer waits for before the video starts (on two cores
the default model writes a 25-word sentence in about 2.7 s, a 12-word one in
about 1.3 s), and with fewer than 8 words (under about 2.7 s of speech) its
video could not start before the next sentence is written and spoken, as the
motion of a frame is final only 1.2 s of speech later. The instruction asks
every writer for such an opening line and the grammar holds the local model
to it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path

from ..personas import Persona
from .llm_common import WORDS_PER_S, target_words
from .local import load_local_model, render_chat

#: Words per sentence the grammar allows (a sentence of more must end first).
MAX_SENTENCE_WORDS = 25
#: Words the first sentence has, at least and at most (a stressed name counts as one word
#: towards the most): the video starts with it, and can start before the next sentence is
#: spoken only when it is long enough (see the module's docstring).
OPENING_MIN_WORDS = 8
OPENING_WORDS = 12
#: Average words per sentence, for the grammar's bound on the number of sentences.
WORDS_PER_SENTENCE = 6
#: Markup tokens per spoken word, with room to spare (words, stars, pauses; measured ~1.6).
MARKUP_TOKENS_PER_WORD = 2.2


def write_tokens(max_tokens: int) -> int:
    """Tokens the model may write: enough for the word target in markup (which costs far
    fewer tokens than the JSON ``max_tokens`` is sized for), never more than max_tokens."""
    return min(max_tokens, int(target_words(max_tokens) * MARKUP_TOKENS_PER_WORD) + 24)


def markup_grammar(max_sentences: int) -> str:
    """GBNF for a script of 1 to ``max_sentences`` sentences in the markup, the first of them short."""
    more = max(0, max_sentences - 1)
    return "\n".join(
        [
            f'root ::= opening (" " sentence){{0,{more}}}',
            f'opening ::= piece (" " piece){{{OPENING_MIN_WORDS - 1},{OPENING_WORDS - 1}}} end (" [pause]")?',
            f'sentence ::= piece (" " piece){{1,{MAX_SENTENCE_WORDS - 1}}} end (" [pause]")?',
            'piece ::= word ","? | "*" word (" " word){0,2} "*" ","?',
            "word ::= [A-Za-z0-9] [A-Za-z0-9'-]{0,17}",
            "end ::= [.!?]",
        ]
    )


def markup_instruction(persona: Persona) -> str:
    """The persona's style prompt plus how to write the markup, as one system message.
    It depends on the persona alone, so llama.cpp evaluates it once and keeps it cached."""
    style = persona.script
    emphasis_lo, emphasis_hi = style.emphasis_words
    if emphasis_hi <= 0:
        stress = "Do not mark any stressed words."
    else:
        stress = (
            f"Put stars around the {emphasis_lo} to {emphasis_hi} words you stress in each sentence, never more "
            "(a name counts as one: *M4 Mac Mini*)."
        )
    return "\n".join(
        [
            persona.style_prompt,
            "",
            f'You write the spoken script of a short talking-head explainer video presented as "{persona.name}".',
            "Write plain spoken English, exactly as said aloud, in short sentences that explain the topic "
            "with real facts.",
            f"Open with one short sentence of {OPENING_MIN_WORDS} to {OPENING_WORDS} words that names the "
            "topic: the video starts playing as soon as it is written.",
            "Mark the delivery with two marks only:",
            f"- {stress}",
            "- Write [pause] after a sentence for a deliberate beat, before a key point.",
            "No lists, headings, emojis, stage directions or symbols: spell numbers and symbols out as spoken. "
            "Do not talk to the user or about the script; start with the topic itself.",
            "Example: So, this new *M4 Mac Mini* is *seriously* fast for its size. [pause] "
            "It does more with less power.",
        ]
    )


def length_request(prompt: str, max_tokens: int) -> str:
    """The user turn: the length, in words and seconds, then the topic. The topic comes last, so
    all before it is the same from one request to the next (per persona and length) and stays in
    llama.cpp's cache with the system prompt: only the topic's few tokens are read anew (with the
    topic first, about 50 tokens: 0.9 s on two cores before the first word)."""
    words = target_words(max_tokens)
    seconds = round(words / WORDS_PER_S)
    length = f"about {words} words (about {seconds} seconds of speech)"
    return f"Write the script of {length} for a video that explains: {prompt}"


def write_with_local(
    prompt: str,
    persona: Persona,
    *,
    temperature: float,
    max_tokens: int,
    seed: int,
    model_path: Path,
    cancel: threading.Event | None = None,
) -> Iterator[str]:
    """Stream the markup the local model writes for the prompt, piece by piece.

    max_tokens: tokens the model may write (the persona's bound or the request's);
    the word target is derived from it as for every writer.
    Raises BackendUnavailable when the file cannot be loaded, ServiceError when
    llama.cpp fails, Cancelled when ``cancel`` is set.
    """
    model = load_local_model(model_path)
    text = render_chat(model.file, markup_instruction(persona), length_request(prompt, max_tokens))
    max_sentences = math.ceil(target_words(max_tokens) / WORDS_PER_SENTENCE) + 1
    yield from model.complete(
        text,
        grammar=markup_grammar(max_sentences),
        temperature=temperature,
        max_tokens=write_tokens(max_tokens),
        seed=seed,
        cache_key=persona.id,
        cancel=cancel,
    )


def warm_local(persona: Persona, model_path: Path) -> None:
    """Load the model and evaluate the persona's system prompt into its slot's cache,
    so the first Generate pays for neither (one token is written and dropped)."""
    model = load_local_model(model_path)
    text = render_chat(model.file, markup_instruction(persona), length_request("warm up", persona.script.max_tokens))
    for _ in model.complete(
        text, grammar=markup_grammar(2), temperature=0.0, max_tokens=1, seed=0, cache_key=persona.id
    ):
        pass
