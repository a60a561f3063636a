"""The IntentTimingMap: one intent value per video frame, from segment spans.

Frame values: pause 0.0, neutral 0.5, emphasis 0.5 + 0.5 * intensity, with a
3-frame (120 ms) ramp at every change, so 0.83 sits between 0.5 and 1.0.
Frames between spans (the model's word gaps) take the value of the nearest
span when it is at most NEAREST_SPAN_S away, else they are pause; lead-in
silence counts as pause, and so does tail silence past NEAREST_SPAN_S.

Every frame's value depends only on the spans within NEAREST_SPAN_S of it
(plus one ramp frame), so a map built on a prefix of the speech (the spans of
the sentences spoken so far) agrees with the whole track's map on all frames
that end NEAREST_SPAN_S + one frame before the prefix ends: streaming relies on this.
"""

from __future__ import annotations

import numpy as np

from ..types import FPS, IntentTimingMap, SegmentSpan, whole_frames

RAMP_FRAMES = 3
#: How far a gap frame looks for a span to take its value from, seconds. The word gaps
#: inside a phrase are 0.02-0.15 s and the silences between sentences without a pause
#: marker 0.05-0.23 s (hibari and Piper), so a gap up to 0.3 s reads as speech, as before.
NEAREST_SPAN_S = 0.15


def intent_value(span: SegmentSpan) -> float:
    """The plateau value of a segment type."""
    if span.intent_type == "pause":
        return 0.0
    if span.intent_type == "emphasis":
        return 0.5 + 0.5 * float(np.clip(span.intensity, 0.0, 1.0))
    return 0.5


def frame_intents(spans: list[SegmentSpan], num_frames: int, fps: int = FPS) -> np.ndarray:
    """float32 (num_frames,) intent per frame, ramps included."""
    if num_frames <= 0:
        return np.zeros(0, dtype=np.float32)
    centres = (np.arange(num_frames) + 0.5) / fps
    values = np.zeros(num_frames, dtype=np.float64)
    timed = [s for s in spans if s.end_s > s.start_s]
    if timed:
        starts = np.array([s.start_s for s in timed])
        ends = np.array([s.end_s for s in timed])
        levels = np.array([intent_value(s) for s in timed], dtype=np.float64)
        # distance from each frame centre to each span (0 inside it)
        distance = np.maximum(starts[None, :] - centres[:, None], 0.0) + np.maximum(
            centres[:, None] - ends[None, :], 0.0
        )
        nearest = np.argmin(distance, axis=1)
        near = distance[np.arange(num_frames), nearest] <= NEAREST_SPAN_S
        values = np.where(near, levels[nearest], 0.0)
        speech = [s for s in timed if s.intent_type != "pause"]
        if speech:
            values[centres < speech[0].start_s] = 0.0
    if num_frames >= RAMP_FRAMES:
        # a box filter written as a sum of shifted copies: every frame adds the same three
        # numbers in the same order however long the map is (a prefix's map agrees bit for bit)
        padded = np.pad(values, RAMP_FRAMES // 2, mode="edge")
        values = sum(padded[k : k + num_frames] for k in range(RAMP_FRAMES)) / RAMP_FRAMES
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def build_timing_map(spans: list[SegmentSpan], total_duration_s: float, fps: int = FPS) -> IntentTimingMap:
    """The map for audio of total_duration_s seconds: its whole frames (``types.whole_frames``)."""
    num_frames = whole_frames(total_duration_s, fps)
    return IntentTimingMap(
        fps=fps,
        frame_intents=frame_intents(spans, num_frames, fps),
        total_duration=float(total_duration_s),
        num_frames=num_frames,
        spans=tuple(spans),
    )
