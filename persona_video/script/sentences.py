"""A script as a stream of sentences, and the checks every model-written script passes.

``SentenceStream`` takes the markup a model writes, piece by piece, and hands
out each sentence once it is final (the next sentence has begun, or the
writer has ended), with the persona's rules applied: a sentence the model
wrote without any markup is annotated by rules, and emphasis beyond the
persona's budget is dropped. ``types.split_sentences`` cuts a finished
ScriptIntent the same way, so every writer streams sentence by sentence.

The quality checks (``preamble``, ``on_topic``, ``speakable``) keep what a
model wrote honest: no "Sure, here is your script", a script that names the
prompt's subject, and words the English voices can say.
"""

from __future__ import annotations

import re

from ..errors import InputError
from ..personas import ScriptStyle
from ..types import ScriptIntent, Segment
from .annotate import annotate
from .markup import MarkupError, normalize, parse_markup

# A sentence's end: . ! or ? (and closing quotes or brackets), then optionally the
# markup's pause tag. Inside emphasis stars the end does not count.
_END = re.compile(r"[.!?]+[\"')\]]*(?:\s*\[pause(?:\s+[\d.]+)?\])?")
_PREAMBLE = re.compile(
    r"^\W*(?:sure|certainly|of course|okay|ok|absolutely|here(?:'s| is| are)|below is|as requested)\b",
    re.IGNORECASE,
)
_PREAMBLE_TOPIC = re.compile(r"\b(?:script|video|here|request|explainer)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
_ANY_LETTER = re.compile(r"[^\W\d_]")
_STOP = set(
    """a an the and or but of to in on at for with from by about into over under is are was were be been
    do does did how why what when where which who whom whose can could should would will shall may might
    must explain tell me us you your i we it its this that these those give describe show teach let lets
    please want like learn know about quick short video script talk works work make makes between vs versus
    compare some any more most very really just""".split()
)


def apply_style(intent: ScriptIntent, style: ScriptStyle) -> ScriptIntent:
    """One sentence with the persona's rules: annotated by rules when it carries no
    markup at all, emphasis cut to the persona's maximum per sentence (first ones kept),
    a pause length the model gave brought into the persona's pause range (a model's
    "[pause 2]" would stall an energetic presenter for two seconds)."""
    if all(seg.intent_type == "neutral" for seg in intent.segments):
        return annotate(intent.spoken_text, style)
    budget = style.emphasis_words[1]
    low_s, high_s = style.pause_range_s
    kept: list[Segment] = []
    emphasised = 0
    for segment in intent.segments:
        if segment.intent_type == "emphasis":
            emphasised += 1
            if emphasised > budget:
                segment = Segment(segment.text, "neutral", 0.0)
        elif segment.intent_type == "pause" and segment.pause_s is not None:
            segment = Segment("", "pause", 0.0, min(max(segment.pause_s, low_s), high_s))
        kept.append(segment)
    return normalize(ScriptIntent(tuple(kept)))


def _sentence_end(text: str, start: int) -> int | None:
    """Index just past the first sentence end at or after ``start`` that is outside
    emphasis stars and followed by more text (so it is known to be final); else None."""
    inside_stars = False
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "*":
            inside_stars = not inside_stars
        elif char in ".!?" and not inside_stars:
            end = _END.match(text, i).end()
            rest = text[end:]
            if not rest.strip() or (rest.lstrip().startswith("[") and "]" not in rest):
                return None  # the writer may still add to this end (a pause tag)
            if rest[0].isspace():
                return end
            i = end  # "3.5": not an end
            continue
        i += 1
    return None


class SentenceStream:
    """Feed it a model's markup as it arrives; take out final sentences.

    style: the persona's script rules (pause range, emphasis budget).
    Each sentence comes out once, parsed, styled and normalized. Markup a model
    broke (an unclosed star) is read as plain words rather than lost.
    """

    def __init__(self, style: ScriptStyle) -> None:
        self.style = style
        self.text = ""
        self._taken = 0  # characters of text already handed out as sentences

    def feed(self, piece: str) -> list[ScriptIntent]:
        """Add written text; the sentences it made final."""
        self.text += piece
        out = []
        while (end := _sentence_end(self.text, self._taken)) is not None:
            sentence = self._parse(self.text[self._taken : end])
            self._taken = end
            if sentence is not None:
                out.append(sentence)
        return out

    def close(self) -> list[ScriptIntent]:
        """The writer has ended: the last sentence, if it ended properly (one cut off
        mid-way by the token limit is dropped)."""
        rest = self.text[self._taken :].strip()
        self._taken = len(self.text)
        if not rest or not _END.search(rest):
            return []
        last_end = max(m.end() for m in _END.finditer(rest))
        sentence = self._parse(rest[:last_end])
        return [] if sentence is None else [sentence]

    def _parse(self, text: str) -> ScriptIntent | None:
        text = text.strip()
        try:
            intent = parse_markup(text)
        except MarkupError:
            intent = ScriptIntent((Segment(text.replace("*", "").replace("[", "").replace("]", ""), "neutral"),))
        intent = normalize(intent)
        if not intent.spoken_text:
            return None
        return apply_style(intent, self.style)


def preamble(sentence: ScriptIntent) -> bool:
    """True for a model's aside to the user ("Sure, here is the script:"), not the script."""
    text = sentence.spoken_text
    return bool(_PREAMBLE.match(text)) and bool(_PREAMBLE_TOPIC.search(text))


def key_words(prompt: str) -> set[str]:
    """The prompt's content words, lower case, cut to a stem of at most 5 letters ("pumps" ->
    "pumps", "heating" -> "heati"): a script about the topic has a word starting with one."""
    words = {w.lower().strip("'’-") for w in _WORD.findall(prompt)}
    return {w[:5] for w in words if len(w) >= 3 and w not in _STOP}


def on_topic(text: str, prompt: str) -> bool:
    """Whether a script names at least one of the prompt's content words, in any form
    ("pumps", "heating"), or the prompt has none."""
    wanted = key_words(prompt)
    if not wanted:
        return True
    return any(word.lower().startswith(stem) for word in _WORD.findall(text) for stem in wanted)


def speakable(text: str, what: str) -> None:
    """InputError unless the text has words in Latin letters: the voices speak English."""
    if _ANY_LETTER.search(text) and not _WORD.search(text):
        raise InputError(
            f"the {what} has no words in English: the voices speak English only, so write the {what} in English"
        )
