"""The canonical text form of a ScriptIntent, and its parser.

Markup (what the editable script box shows)::

    So, [pause 0.4] this new *M4 Mac Mini* is *seriously*{0.7} fast.

- plain words are ``neutral`` segments;
- ``*words*`` is an ``emphasis`` segment of intensity 1.0, ``*words*{0.7}``
  one of intensity 0.7 (0..1);
- ``[pause 0.4]`` is a pause of 0.4 s (0.05..3 s); ``[pause]`` lets the speech
  stage pick a length from the persona's pause range;
- a backslash makes the next character literal (``\\*``, ``\\[``, ``\\{``, ``\\\\``).

``to_markup(parse_markup(text))`` is stable and ``parse_markup(to_markup(x)) == x``
for every normalized ScriptIntent (see :func:`normalize`).
"""

from __future__ import annotations

import re

from ..errors import InputError
from ..types import ScriptIntent, Segment

MIN_PAUSE_S = 0.05
MAX_PAUSE_S = 3.0
_SPECIAL = set("*[]{}\\")
_NO_SPACE_BEFORE = set(".,!?;:)")
_WS = re.compile(r"\s+")


class MarkupError(InputError):
    """Broken markup; the message points at the line and column."""


def _where(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    snippet = text[max(0, index - 12) : index + 12].replace("\n", " ")
    return f"line {line}, column {column} (near '{snippet}')"


def _clean(text: str) -> str:
    return _WS.sub(" ", text).strip()


def parse_markup(text: str) -> ScriptIntent:
    """Parse canonical markup into segments.

    Raises MarkupError naming the position of anything broken: an unclosed
    ``*``, an unknown ``[tag]``, a bad pause length or intensity.
    """
    if not isinstance(text, str):
        raise MarkupError("the script must be text")
    segments: list[Segment] = []
    buffer: list[str] = []
    i, n = 0, len(text)

    def flush_neutral() -> None:
        words = _clean("".join(buffer))
        buffer.clear()
        if words:
            if segments and segments[-1].intent_type == "neutral":
                words = _join(segments.pop().text, words)
            segments.append(Segment(words, "neutral", 0.0))

    while i < n:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= n:
                raise MarkupError(f"a backslash at the end of the script, {_where(text, i)}: remove it or write '\\\\'")
            buffer.append(text[i + 1])
            i += 2
        elif ch == "*":
            flush_neutral()
            start = i
            i += 1
            words: list[str] = []
            while i < n and text[i] != "*":
                if text[i] == "\\" and i + 1 < n:
                    words.append(text[i + 1])
                    i += 2
                    continue
                if text[i] == "[":
                    raise MarkupError(f"a '[' tag inside emphasis at {_where(text, i)}: close the '*' first")
                words.append(text[i])
                i += 1
            if i >= n:
                raise MarkupError(f"emphasis opened at {_where(text, start)} is never closed: add the closing '*'")
            emphasised = _clean("".join(words))
            if not emphasised:
                raise MarkupError(f"empty emphasis '**' at {_where(text, start)}: put words between the stars")
            i += 1
            intensity = 1.0
            if i < n and text[i] == "{":
                close = text.find("}", i)
                if close < 0:
                    raise MarkupError(f"intensity opened at {_where(text, i)} is never closed: write e.g. {{0.7}}")
                intensity = _number(text, i, text[i + 1 : close], "intensity", 0.0, 1.0)
                i = close + 1
            segments.append(Segment(emphasised, "emphasis", intensity))
        elif ch == "[":
            flush_neutral()
            close = text.find("]", i)
            if close < 0:
                raise MarkupError(f"'[' at {_where(text, i)} is never closed: write [pause] or [pause 0.4]")
            parts = text[i + 1 : close].split()
            if not parts or parts[0].lower() != "pause" or len(parts) > 2:
                raise MarkupError(
                    f"unknown tag '[{text[i + 1 : close]}]' at {_where(text, i)}: "
                    "the only tag is [pause] or [pause SECONDS]"
                )
            pause_s = None
            if len(parts) == 2:
                pause_s = _number(text, i, parts[1], "pause length in seconds", MIN_PAUSE_S, MAX_PAUSE_S)
            segments.append(Segment("", "pause", 0.0, pause_s))
            i = close + 1
        elif ch in "]{}":
            raise MarkupError(f"stray '{ch}' at {_where(text, i)}: write '\\{ch}' for the character itself")
        else:
            buffer.append(ch)
            i += 1
    flush_neutral()
    if not any(s.intent_type != "pause" for s in segments):
        raise MarkupError("the script has no words: write at least one sentence")
    return ScriptIntent(tuple(segments))


def _number(text: str, at: int, raw: str, what: str, lo: float, hi: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise MarkupError(f"'{raw}' at {_where(text, at)} is not a number: the {what} must be a number") from None
    if not lo <= value <= hi:
        raise MarkupError(f"{what} {value:g} at {_where(text, at)} is out of range: use {lo:g} to {hi:g}")
    return round(value, 2)


def _escape(text: str) -> str:
    return "".join("\\" + ch if ch in _SPECIAL else ch for ch in text)


def _join(left: str, right: str) -> str:
    if not left:
        return right
    if not right:
        return left
    return left + right if right[0] in _NO_SPACE_BEFORE else f"{left} {right}"


def to_markup(intent: ScriptIntent) -> str:
    """Serialize segments to canonical markup (one line)."""
    out = ""
    for seg in intent.segments:
        if seg.intent_type == "pause":
            piece = "[pause]" if seg.pause_s is None else f"[pause {seg.pause_s:g}]"
            out = f"{out} {piece}" if out else piece
            continue
        if seg.intent_type == "emphasis":
            piece = f"*{_escape(seg.text)}*"
            if round(seg.intensity, 2) != 1.0:
                piece += f"{{{round(seg.intensity, 2):g}}}"
            # a space always separates emphasis from what is before it
            out = f"{out} {piece}" if out else piece
            continue
        out = _join(out, _escape(seg.text)) if not out.endswith("]") else f"{out} {_escape(seg.text)}"
    return out


def normalize(intent: ScriptIntent) -> ScriptIntent:
    """The canonical form of any segment list (e.g. from an LLM): whitespace
    collapsed, empty segments dropped, neighbouring neutral text merged,
    neutral and pause intensities 0, numbers rounded to 0.01."""
    out: list[Segment] = []
    for seg in intent.segments:
        if seg.intent_type == "pause":
            pause_s = None if seg.pause_s is None else round(min(max(seg.pause_s, MIN_PAUSE_S), MAX_PAUSE_S), 2)
            out.append(Segment("", "pause", 0.0, pause_s))
            continue
        text = _clean(seg.text)
        if not text:
            continue
        if seg.intent_type == "emphasis":
            out.append(Segment(text, "emphasis", round(min(max(seg.intensity, 0.0), 1.0), 2)))
        elif out and out[-1].intent_type == "neutral":
            out[-1] = Segment(_join(out[-1].text, text), "neutral", 0.0)
        else:
            out.append(Segment(text, "neutral", 0.0))
    return ScriptIntent(tuple(out))
