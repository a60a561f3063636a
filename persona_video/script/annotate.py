"""Rule-based intent annotation of plain text.

A user-written or edited script with no markup still drives motion: clause
punctuation and sentence ends become pauses in the persona's range, and
numbers, superlatives, product names and words in capitals become emphasis
within the persona's per-sentence budget of emphasised words.
"""

from __future__ import annotations

import re

from ..personas import ScriptStyle
from ..types import ScriptIntent, Segment
from .markup import normalize

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")
_TOKEN = re.compile(r"\S+")
_CLAUSE_END = re.compile(r"[,;:\u2014\u2013]$|\s-$")
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)]*$")
_STRIP = "\"'()[]\u201c\u201d\u2018\u2019.,!?;:"
SUPERLATIVES = {
    "best",
    "worst",
    "most",
    "least",
    "fastest",
    "biggest",
    "smallest",
    "cheapest",
    "newest",
    "latest",
    "first",
    "only",
    "every",
    "never",
    "always",
    "huge",
    "massive",
    "incredible",
    "amazing",
    "seriously",
    "really",
    "insane",
    "absolutely",
    "completely",
    "totally",
    "literally",
    "game-changer",
    "finally",
    "faster",
    "better",
    "cheaper",
    "smaller",
    "bigger",
    "lighter",
    "quieter",
    "stronger",
    "twice",
}
STOPWORDS = {
    "a",
    "an",
    "the",
    "and",
    "or",
    "but",
    "so",
    "of",
    "to",
    "in",
    "on",
    "at",
    "for",
    "with",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "it",
    "its",
    "it's",
    "this",
    "that",
    "these",
    "those",
    "you",
    "your",
    "i",
    "we",
    "they",
    "he",
    "she",
    "my",
    "our",
    "their",
    "as",
    "by",
    "from",
    "not",
    "do",
    "does",
    "can",
    "will",
    "just",
    "if",
    "then",
    "than",
    "what",
    "which",
    "who",
    "how",
    "why",
    "when",
    "there",
    "here",
    "has",
    "have",
    "had",
    "about",
    "into",
    "out",
    "up",
    "all",
    "more",
    "some",
    "one",
    "also",
    "let's",
    "let",
}


def _word_score(token: str, position: int) -> float:
    """How strongly a word asks for emphasis (0 = not at all)."""
    word = token.strip(_STRIP)
    if not word:
        return 0.0
    lower = word.lower()
    if any(ch.isdigit() for ch in word):
        return 1.0
    if len(word) >= 2 and word.isupper() and word.isalpha():
        return 0.95
    if lower in SUPERLATIVES or (lower.endswith("est") and len(lower) > 5):
        return 0.8
    if position > 0 and word[0].isupper() and lower not in STOPWORDS:
        return 0.7  # a name mid-sentence: product, company, place
    if lower in STOPWORDS or len(lower) < 4:
        return 0.0
    return 0.1 + min(len(lower), 12) / 100.0  # a content word: longer ones first


def _pick_emphasis(tokens: list[str], budget: tuple[int, int]) -> dict[int, float]:
    """Indices of tokens to emphasise -> intensity.

    Budget (min, max) counts emphasised words, except that a run of strong
    words (a product name such as "M4 Mac Mini", up to 3 words) counts once.
    """
    low, high = budget
    scores = [_word_score(t, i) for i, t in enumerate(tokens)]
    units: list[tuple[float, list[int]]] = []
    for i, score in enumerate(scores):
        joins = units and units[-1][1][-1] == i - 1 and len(units[-1][1]) < 3
        joins = joins and scores[i - 1] >= 0.7 and not _CLAUSE_END.search(tokens[i - 1].rstrip(".!?"))
        joins = joins and tokens[i - 1][-1:] not in ".,!?;:"
        if score >= 0.7 and joins:
            units[-1] = (max(units[-1][0], score), units[-1][1] + [i])
        elif score >= 0.7:
            units.append((score, [i]))
    units.sort(key=lambda u: (-u[0], u[1][0]))
    chosen: dict[int, float] = {}
    for score, members in units[:high]:
        for index in members:
            chosen[index] = score
    picked = min(len(units), high)
    if picked < low:
        # fill the persona's minimum with the longest content words
        weak = sorted(
            ((s, i) for i, s in enumerate(scores) if 0.0 < s < 0.7 and i not in chosen), key=lambda s: (-s[0], s[1])
        )
        for _, index in weak[: low - picked]:
            chosen[index] = 0.6
    return chosen


def annotate(text: str, style: ScriptStyle) -> ScriptIntent:
    """Plain text -> segments: pauses at clause and sentence ends (persona
    range: short at commas, long at full stops), emphasis within budget."""
    pause_short_s, pause_long_s = style.pause_range_s
    segments: list[Segment] = []
    sentences = [s for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]
    for sentence_index, sentence in enumerate(sentences):
        tokens = _TOKEN.findall(sentence)
        emphasis = _pick_emphasis(tokens, style.emphasis_words)
        run: list[str] = []
        run_type = "neutral"
        run_intensity = 0.0

        def close_run(run: list[str], run_type: str, run_intensity: float) -> None:
            if run:
                segments.append(Segment(" ".join(run), run_type, run_intensity))
                run.clear()

        for index, token in enumerate(tokens):
            is_emph = index in emphasis
            # keep trailing punctuation outside the stars: "*fast*."
            core, tail = token, ""
            if is_emph:
                stripped = token.rstrip(".,!?;:")
                core, tail = stripped, token[len(stripped) :]
            kind = "emphasis" if is_emph else "neutral"
            if kind != run_type or (is_emph and round(emphasis[index], 2) != run_intensity):
                close_run(run, run_type, run_intensity)
                run_type, run_intensity = kind, (round(emphasis[index], 2) if is_emph else 0.0)
            run.append(core)
            if tail:
                close_run(run, run_type, run_intensity)
                run_type, run_intensity = "neutral", 0.0
                run.append(tail)
            last = index == len(tokens) - 1
            if not last and _CLAUSE_END.search(token):
                close_run(run, run_type, run_intensity)
                run_type, run_intensity = "neutral", 0.0
                segments.append(Segment("", "pause", 0.0, pause_short_s))
        close_run(run, run_type, run_intensity)
        if sentence_index < len(sentences) - 1 and _SENTENCE_END.search(tokens[-1] if tokens else ""):
            segments.append(Segment("", "pause", 0.0, pause_long_s))
    return normalize(ScriptIntent(tuple(segments)))


def has_markup(text: str) -> bool:
    """True when the text uses any markup (stars, [pause] tags)."""
    return bool(re.search(r"(?<!\\)\*|(?<!\\)\[pause", text))
