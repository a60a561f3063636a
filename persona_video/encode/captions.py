"""Captions: WebVTT cues from the segment spans of the timing map.

Pauses are skipped; spoken words are merged into cues that end at sentence
ends, at about 7 s or 80 characters, or at a silence of over 1 s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..types import SegmentSpan

#: A caption cue stays on screen at most this long, seconds.
CUE_MAX_S = 7.0
#: A caption cue holds at most this many characters.
CUE_MAX_CHARS = 80
#: A silence longer than this ends the cue, seconds.
CUE_MAX_GAP_S = 1.0


def _vtt_time(seconds: float) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def _timed_words(spans: Sequence[SegmentSpan]) -> list[tuple[str, float, float]]:
    """Words of the spoken spans with times spread over each span by character count."""
    words: list[tuple[str, float, float]] = []
    for span in spans:
        span_words = span.text.split()
        if span.intent_type == "pause" or not span_words:
            continue
        weights = np.array([len(w) + 1 for w in span_words], dtype=np.float64)
        edges = span.start_s + (span.end_s - span.start_s) * np.r_[0.0, np.cumsum(weights)] / weights.sum()
        words += [(w, float(edges[i]), float(edges[i + 1])) for i, w in enumerate(span_words)]
    return words


def webvtt_cues(spans: Sequence[SegmentSpan]) -> list[tuple[float, float, str]]:
    """Caption cues (start_s, end_s, text) from the segment spans.

    Pauses are skipped; spoken segments are joined into cues of at most
    CUE_MAX_S seconds and CUE_MAX_CHARS characters, ending at sentence ends and
    at silences longer than CUE_MAX_GAP_S. A segment too long for one cue is
    split between words.
    """
    cues: list[tuple[float, float, str]] = []
    current: list[tuple[str, float, float]] = []
    for word, start_s, end_s in _timed_words(spans):
        if current:
            text_len = len(" ".join(w for w, _, _ in current)) + 1 + len(word)
            ends_sentence = current[-1][0].endswith((".", "!", "?"))
            too_long = text_len > CUE_MAX_CHARS or end_s - current[0][1] > CUE_MAX_S
            if ends_sentence or too_long or start_s - current[-1][2] > CUE_MAX_GAP_S:
                cues.append((current[0][1], current[-1][2], " ".join(w for w, _, _ in current)))
                current = []
        current.append((word, start_s, end_s))
    if current:
        cues.append((current[0][1], current[-1][2], " ".join(w for w, _, _ in current)))
    return cues


def write_webvtt(spans: Sequence[SegmentSpan], path: str | os.PathLike[str]) -> Path:
    """Write WebVTT captions for the spoken segments (atomically); returns the path."""
    path = Path(path)
    lines = ["WEBVTT", ""]
    for number, (start_s, end_s, text) in enumerate(webvtt_cues(spans), start=1):
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        lines += [str(number), f"{_vtt_time(start_s)} --> {_vtt_time(end_s)}", escaped, ""]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- benchmark
