"""The app's intent plot: per-frame intent, the governor's gain over it, and
the script's segments shaded by type.

Built on a bare ``matplotlib.figure.Figure`` (no pyplot state), so concurrent
requests in the server's worker threads cannot draw into each other's axes.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..types import IntentTimingMap

#: Shade per segment type: calm grey, quiet blue, warm orange.
SEGMENT_COLORS: dict[str, str] = {"pause": "#9ca3af", "neutral": "#93c5fd", "emphasis": "#fdba74"}
INTENT_COLOR = "#1e3a8a"
GAIN_COLOR = "#dc2626"


def intent_figure(timing: IntentTimingMap, gains: np.ndarray | None = None) -> Figure:
    """A figure of the intent curve over time, with the gain curve when given.

    timing: the speech stage's map; ``frame_intents`` is (num_frames,) in [0, 1]
        at ``timing.fps``, ``spans`` are shaded by intent type.
    gains: the governor's per-frame gain (num_frames,), multiplier; None
        before the governor has run.
    """
    frame_intents = np.asarray(timing.frame_intents, dtype=np.float32)
    seconds = np.arange(len(frame_intents), dtype=np.float32) / float(timing.fps)
    figure = Figure(figsize=(9.0, 2.8), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for span in timing.spans:
        axes.axvspan(span.start_s, span.end_s, color=SEGMENT_COLORS.get(span.intent_type, "#e5e7eb"), alpha=0.35, lw=0)
    axes.plot(seconds, frame_intents, color=INTENT_COLOR, lw=1.8, label="intent (0 pause, 0.5 neutral, 1 emphasis)")
    top = 1.05
    if gains is not None:
        gains = np.asarray(gains, dtype=np.float32)
        gain_seconds = np.arange(len(gains), dtype=np.float32) / float(timing.fps)
        axes.plot(gain_seconds, gains, color=GAIN_COLOR, lw=1.6, ls="--", label="governor gain (motion kept)")
        top = max(top, float(gains.max(initial=0.0)) + 0.05)
    axes.set_xlim(0.0, max(timing.total_duration, float(seconds[-1]) if len(seconds) else 0.0, 0.1))
    axes.set_ylim(-0.03, top)
    axes.set_title("Intent per frame, governor gain and segments", loc="left", fontsize=10)
    axes.set_xlabel("seconds")
    axes.set_ylabel("value")
    axes.grid(True, axis="y", alpha=0.3)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    handles, _ = axes.get_legend_handles_labels()
    handles += [Patch(color=color, alpha=0.35, label=name) for name, color in SEGMENT_COLORS.items()]
    axes.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=5, fontsize=8, frameon=False)
    return figure
