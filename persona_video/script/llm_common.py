"""What the remote script writers (Gemini, OpenAI-compatible, Ollama through it)
share: the word target, the reader of their streamed answers, and the parser
of an answer that comes in the segments JSON instead of the markup.

They ask for the script markup (:mod:`.local_writer`'s instruction), streamed,
so each sentence is final as soon as the next one begins; ``answer_pieces``
passes the markup on as it comes. An answer in the segments JSON (a server
that forces JSON, a proxy answering from an older request) is read whole::

    {"segments": [{"text": "So,", "intent_type": "neutral", "intensity": 0},
                  {"text": "", "intent_type": "pause", "intensity": 0, "pause_s": 0.4},
                  {"text": "seriously", "intent_type": "emphasis", "intensity": 0.8}, ...]}

Anything else raises :class:`ServiceError` with a reason a user can read;
the script stage then falls back to the offline writer and shows it.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import ServiceError
from ..types import INTENT_TYPES, ScriptIntent, Segment
from .markup import normalize, to_markup

logger = logging.getLogger(__name__)

#: Output tokens one spoken word costs inside the segment JSON: the word itself
#: plus its share of the keys, quotes and pause objects around it (measured on
#: a 46-word script with 1-2 emphases and a pause per sentence: 1432 characters
#: of compact JSON, about 9 tokens a word). The answer must fit in max_tokens,
#: so the word target is max_tokens / this: 400 tokens -> 40 words, about 16 s.
JSON_TOKENS_PER_WORD = 10.0
#: Speaking rate used to turn the word target into seconds, words per second.
WORDS_PER_S = 2.5
MIN_TARGET_WORDS = 12

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
# Emoji blocks, dingbats, variation selector 16 and zero-width joiner.
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f\u200d]")
# Bracketed stage directions ("[laughs]") and markdown marks a voice would read out.
_STAGE_DIRECTION = re.compile(r"\[[^\]]*\]")
_MARKDOWN = re.compile(r"[*_#`]+")
_WS = re.compile(r"\s+")
_HAS_WORD = re.compile(r"\w")
_REASON_CHARS = 160


class _BadAnswer(Exception):
    """What is wrong with an answer; segments_from_json turns it into a ServiceError."""


def target_words(max_tokens: int) -> int:
    """Spoken words to ask for so the JSON answer fits in max_tokens output tokens."""
    return max(MIN_TARGET_WORDS, int(max_tokens / JSON_TOKENS_PER_WORD))


def _short(text: str) -> str:
    text = _WS.sub(" ", text).strip()
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _clean_text(text: str) -> str:
    text = _EMOJI.sub("", text)
    text = _STAGE_DIRECTION.sub(" ", text)
    text = _MARKDOWN.sub("", text)
    return _WS.sub(" ", text).strip()


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _BadAnswer(f"{where}: '{key}' must be a number, got {value!r}")
    return float(value)


def _segment(item: Any, index: int, pause_range_s: tuple[float, float] | None) -> list[Segment]:
    """One answer item -> 0, 1 or 2 segments (a pause that carries words keeps them, after it)."""
    where = f"segment {index}"
    if not isinstance(item, dict):
        raise _BadAnswer(f"{where} is {type(item).__name__}, not an object")
    intent_type = item.get("intent_type")
    if not isinstance(intent_type, str) or intent_type.strip().lower() not in INTENT_TYPES:
        raise _BadAnswer(f"{where}: 'intent_type' must be one of {', '.join(INTENT_TYPES)}, got {intent_type!r}")
    intent_type = intent_type.strip().lower()
    raw_text = item.get("text", "")
    if raw_text is None:
        raw_text = ""
    if not isinstance(raw_text, str):
        raise _BadAnswer(f"{where}: 'text' must be a string, got {raw_text!r}")
    text = _clean_text(raw_text)
    default_intensity = 0.8 if intent_type == "emphasis" else 0.0
    intensity = item.get("intensity", default_intensity)
    intensity = default_intensity if intensity is None else _number(intensity, where, "intensity")
    intensity = min(1.0, max(0.0, intensity))

    if intent_type != "pause":
        return [Segment(text, intent_type, intensity)] if _HAS_WORD.search(text) else []
    pause_s = item.get("pause_s")
    if pause_s is not None:
        pause_s = _number(pause_s, where, "pause_s")
        if pause_s <= 0:
            raise _BadAnswer(f"{where}: 'pause_s' must be positive, got {pause_s}")
        if pause_range_s is not None:
            pause_s = min(pause_range_s[1], max(pause_range_s[0], pause_s))
    segments = [Segment("", "pause", 0.0, pause_s)]
    if _HAS_WORD.search(text):
        logger.info("%s is a pause with words %r: keeping them as neutral speech after it", where, text)
        segments.append(Segment(text, "neutral", 0.0))
    return segments


def _load_json(text: str) -> Any:
    """The JSON value in an answer; tolerates a ```json fence and prose around one object."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as first_error:
        start, end = stripped.find("{"), stripped.rfind("}")
        if 0 <= start < end and (start > 0 or end < len(stripped) - 1):
            try:
                return json.loads(stripped[start : end + 1])
            except json.JSONDecodeError:
                pass
        raise _BadAnswer(
            f"not valid JSON ({first_error.msg} at character {first_error.pos}): {_short(text)!r}"
        ) from first_error


def segments_from_json(
    text: str, *, service: str = "The model", pause_range_s: tuple[float, float] | None = None
) -> ScriptIntent:
    """Validate an LLM answer and turn it into a ScriptIntent.

    text: the answer, a JSON object {"segments": [{text, intent_type, intensity, pause_s?}, ...]},
        optionally inside a ```json fence.
    service: who answered, for the error message ("Gemini", "llama3.2 at http://...").
    pause_range_s: (min, max) seconds to clamp pause lengths into (the persona's range); None keeps them.

    Intensities are clamped to [0, 1]; emojis, [stage directions] and markdown
    marks are removed from the words; empty speech segments are dropped.
    Raises ServiceError naming what is wrong: not JSON, no "segments" list, a
    bad segment, or a script with no words.
    """
    try:
        if not isinstance(text, str) or not text.strip():
            raise _BadAnswer("the answer was empty")
        data = _load_json(text)
        if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
            raise _BadAnswer(f'expected an object with a "segments" list, got {_short(json.dumps(data))!r}')
        segments: list[Segment] = []
        for index, item in enumerate(data["segments"]):
            segments.extend(_segment(item, index, pause_range_s))
        intent = ScriptIntent(tuple(segments))
        if not intent.spoken_text:
            raise _BadAnswer("the script has no spoken words")
    except _BadAnswer as e:
        raise ServiceError(f"{service} answered with something other than the JSON asked for: {e}") from e
    return intent


def _answer_start(head: str) -> tuple[str | None, str]:
    """(what the answer is: "markup", "json" or None while it cannot yet be told, the
    answer with a leading code fence line dropped)."""
    text = head.lstrip()
    if text.startswith("```"):
        if "\n" not in text:
            return None, head
        return _answer_start(text.split("\n", 1)[1])
    if not text or "```".startswith(text):
        return None, head
    return ("json" if text.startswith("{") else "markup"), text


def answer_pieces(
    pieces: Iterable[str], *, service: str, pause_range_s: tuple[float, float] | None = None
) -> Iterator[str]:
    """A remote model's answer, as it streams in, as script markup pieces.

    pieces: the text of the answer in the pieces it arrives in.
    service: who answers, for the error message.
    pause_range_s: (min, max) seconds for the pauses of a JSON answer (the persona's range).

    Markup is passed on as it comes, with a leading code fence line dropped (a
    closing fence ends no sentence, so the sentence stream leaves it out). An
    answer that starts with "{" is the segments JSON: it is read whole and given
    as one piece of markup; ServiceError when it is not the JSON asked for.
    """
    kind: str | None = None
    head = ""
    for piece in pieces:
        if kind == "markup":
            yield piece
            continue
        head += piece
        if kind is None:
            kind, head = _answer_start(head)
            if kind == "markup":
                yield head
    if kind == "json":
        intent = segments_from_json(head, service=service, pause_range_s=pause_range_s)
        yield to_markup(normalize(intent))
    elif kind is None and head.strip():
        yield head  # a fence and nothing else: no sentence in it, which the stream reports
