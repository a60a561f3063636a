"""The typed results that pass between stages (see DESIGN.md, "The contracts").

Each stage takes the previous stage's result and returns its own:

    Script -> Speech -> MotionTrack (raw) -> MotionTrack (governed) + gains -> frames -> MP4
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

IntentType = Literal["pause", "neutral", "emphasis"]
INTENT_TYPES: tuple[str, ...] = ("pause", "neutral", "emphasis")

#: Video frame rate of every stage after speech, frames per second.
FPS = 25


def whole_frames(duration_s: float, fps: int = FPS) -> int:
    """The whole frames in duration_s seconds. A product a hair under a whole number in floats
    counts as that number: 18.56 s at 25 fps is 464 frames, though 18.56 * 25 is 463.99999...
    (truncated, the video came out a frame shorter than its audio)."""
    return math.floor(duration_s * fps + 1e-6)


@dataclass(frozen=True)
class Segment:
    """One piece of a script.

    text: the words spoken (empty for a pause).
    intent_type: "pause" | "neutral" | "emphasis".
    intensity: 0..1; for a pause, its length is carried by ``pause_s``.
    pause_s: seconds of silence for a pause segment (None elsewhere, or when
        the speech stage should pick one from the persona's range).
    """

    text: str
    intent_type: IntentType
    intensity: float = 0.0
    pause_s: float | None = None

    def to_dict(self) -> dict:
        out: dict = {"text": self.text, "intent_type": self.intent_type, "intensity": round(self.intensity, 4)}
        if self.pause_s is not None:
            out["pause_s"] = round(self.pause_s, 4)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Segment:
        pause_s = data.get("pause_s")
        return cls(
            text=str(data.get("text", "")),
            intent_type=data["intent_type"],
            intensity=float(data.get("intensity", 0.0)),
            pause_s=None if pause_s is None else float(pause_s),
        )


@dataclass(frozen=True)
class ScriptIntent:
    """An ordered list of segments; its canonical text form is in script.markup."""

    segments: tuple[Segment, ...]

    def to_dict(self) -> dict:
        return {"segments": [s.to_dict() for s in self.segments]}

    @classmethod
    def from_dict(cls, data: dict) -> ScriptIntent:
        return cls(tuple(Segment.from_dict(s) for s in data["segments"]))

    @property
    def spoken_text(self) -> str:
        """The words alone, as a listener hears them."""
        out = ""
        for seg in self.segments:
            if seg.intent_type == "pause" or not seg.text:
                continue
            glue = "" if not out or seg.text[0] in ".,!?;:)" else " "
            out += glue + seg.text
        return out.strip()


# A segment's text ends a sentence: . ! or ? then closing quotes or brackets.
_ENDS_SENTENCE = re.compile(r"[.!?][\"')\]]*$")
_BETWEEN_SENTENCES = re.compile(r"(?<=[.!?])\s+")


def split_sentences(intent: ScriptIntent) -> list[ScriptIntent]:
    """A finished script's segments cut into sentences, in order: a sentence ends
    where a segment's text ends one (neutral text holding several sentences is cut
    between them), and the pauses right after an end belong to that sentence.

    Here, not in the script stage, because both the script stage (which streams
    sentences) and the speech stage (which speaks them one by one) cut by it."""
    sentences: list[list[Segment]] = [[]]
    for segment in intent.segments:
        if segment.intent_type == "pause":
            if not sentences[-1] and len(sentences) > 1:
                sentences[-2].append(segment)
            else:
                sentences[-1].append(segment)
            continue
        parts = _BETWEEN_SENTENCES.split(segment.text) if segment.intent_type == "neutral" else [segment.text]
        for part in parts:
            sentences[-1].append(Segment(part, segment.intent_type, segment.intensity))
            if _ENDS_SENTENCE.search(part):
                sentences.append([])
    return [ScriptIntent(tuple(s)) for s in sentences if any(seg.intent_type != "pause" for seg in s)]


@dataclass(frozen=True)
class Script:
    """Stage 1 result: the script as canonical markup plus its segments.

    backend: which writer produced it ("local", "ollama", "openai", "gemini", "offline", "given").
    notice: a sentence for the user when a fallback happened (else "").
    model: the language model that wrote it (a file or model name; "" for the template and a given script).
    """

    markup: str
    intent: ScriptIntent
    backend: str
    notice: str = ""
    model: str = ""


@dataclass(frozen=True)
class ScriptDraft:
    """The script while it is being written (stage 1 streams these).

    text: everything the writer has written so far, as markup (it grows from
        draft to draft; the page's script box shows it).
    sentences: every sentence whose segments are final so far, in order, each a
        ScriptIntent; later drafts only append. A sentence is final when the
        next one has begun or the writer has ended.
    backend: the writer at work ("local", "offline", "gemini", "openai", "ollama", "given").
    script: the finished Script, on the last draft only (None before); its
        segments are the sentences' segments in order.
    """

    text: str
    sentences: tuple[ScriptIntent, ...]
    backend: str
    script: Script | None = None


@dataclass(frozen=True)
class SegmentSpan:
    """Where one segment sits in the audio, seconds from the start."""

    index: int
    intent_type: IntentType
    intensity: float
    text: str
    start_s: float
    end_s: float

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "intent_type": self.intent_type,
            "intensity": round(self.intensity, 4),
            "text": self.text,
            "start_s": round(self.start_s, 4),
            "end_s": round(self.end_s, 4),
        }

    @classmethod
    def from_dict(cls, data: dict) -> SegmentSpan:
        return cls(
            index=int(data["index"]),
            intent_type=data["intent_type"],
            intensity=float(data["intensity"]),
            text=str(data["text"]),
            start_s=float(data["start_s"]),
            end_s=float(data["end_s"]),
        )


@dataclass(frozen=True)
class PhonemeTiming:
    """One phoneme (IPA symbol(s)) and when it sounds, seconds from the start."""

    phoneme: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class SpeechChunk:
    """One piece of streamed speech: a sentence, or the closing silence.

    audio: float32 (num_samples,) at its final level; chunks abut, so the
        track is the chunks' audio concatenated in order.
    start_sample: where the chunk begins in the whole track, in samples.
    spans: the sentence's segment spans, seconds from the track's start; their
        indices run over the whole stream (empty for the closing silence).
    phonemes: the sentence's phoneme timings, seconds from the track's start.
    """

    audio: np.ndarray
    start_sample: int
    spans: tuple[SegmentSpan, ...]
    phonemes: tuple[PhonemeTiming, ...]

    @property
    def end_sample(self) -> int:
        """Just past the chunk's last sample, where the next chunk begins."""
        return self.start_sample + len(self.audio)


#: Decimals of the per-frame intents in timing.json (and in memory, so both agree).
INTENT_DECIMALS = 4


@dataclass(frozen=True)
class IntentTimingMap:
    """What speech hands to motion.

    fps: video frames per second (25).
    frame_intents: float32 array (num_frames,) in [0, 1]: pause 0.0, neutral
        0.5, emphasis 0.5 + 0.5 * intensity, with short ramps at changes.
    total_duration: seconds of audio.
    num_frames: the whole frames in total_duration (``whole_frames``).
    spans: one span per script segment, in order.
    """

    fps: int
    frame_intents: np.ndarray
    total_duration: float
    num_frames: int
    spans: tuple[SegmentSpan, ...]

    def __post_init__(self) -> None:
        # held at the 4 decimals timing.json keeps, so a job read back (a re-render) governs
        # its motion with the very same numbers as the run that wrote it
        quantized = np.round(np.asarray(self.frame_intents, dtype=np.float64), INTENT_DECIMALS).astype(np.float32)
        object.__setattr__(self, "frame_intents", quantized)

    def to_dict(self) -> dict:
        return {
            "fps": self.fps,
            "frame_intents": [round(float(v), INTENT_DECIMALS) for v in self.frame_intents],
            "total_duration": round(self.total_duration, 4),
            "num_frames": self.num_frames,
            "segments": [s.to_dict() for s in self.spans],
        }

    @classmethod
    def from_dict(cls, data: dict) -> IntentTimingMap:
        return cls(
            fps=int(data["fps"]),
            frame_intents=np.asarray(data["frame_intents"], dtype=np.float32),
            total_duration=float(data["total_duration"]),
            num_frames=int(data["num_frames"]),
            spans=tuple(SegmentSpan.from_dict(s) for s in data["segments"]),
        )


@dataclass(frozen=True)
class Speech:
    """Stage 2 result.

    audio: float32 mono samples in [-1, 1], shape (num_samples,).
    sample_rate: Hz.
    timing: the intent timing map for the video frames.
    phonemes: phoneme timings where the backend has them (Piper), else
        an empty tuple (motion then falls back to loudness).
    backend: "piper", "hibari", "xtts".
    voice: the voice name used.
    """

    audio: np.ndarray
    sample_rate: int
    timing: IntentTimingMap
    phonemes: tuple[PhonemeTiming, ...]
    backend: str
    voice: str
    notice: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


# Coefficient layouts (see DESIGN.md, MotionTrack). Slices are [start, stop).
LAYOUTS: dict[str, dict[str, tuple[int, int]]] = {
    "compact70": {"exp": (0, 64), "angle": (64, 67), "trans": (67, 70)},
    "compact73": {"exp": (0, 64), "angle": (64, 67), "trans": (67, 70), "crop": (70, 73)},
    "full257": {
        "id": (0, 80),
        "exp": (80, 144),
        "tex": (144, 224),
        "angle": (224, 227),
        "gamma": (227, 254),
        "trans": (254, 257),
    },
}


def layout_for_dims(dims: int) -> str:
    """Name of the layout for a coefficient width (70, 73 or 257)."""
    for name, slices in LAYOUTS.items():
        if max(stop for _, stop in slices.values()) == dims:
            return name
    raise ValueError(f"no coefficient layout has {dims} dimensions: expected 70, 73 or 257")


@dataclass(frozen=True)
class MotionTrack:
    """Stage 3a/3b result.

    coeffs: float32 (T, D) with T video frames and D in {70, 73, 257}.
    fps: frames per second.
    layout: key of LAYOUTS naming the slices.
    reference: float32 (D,) coefficients of the source portrait (the
        "rest" pose the governor scales motion around); zeros for the
        embedded generator.
    backend: which generator produced it.
    """

    coeffs: np.ndarray
    fps: int
    layout: str
    reference: np.ndarray = field(default=None)  # type: ignore[assignment]
    backend: str = "embedded"

    def __post_init__(self) -> None:
        if self.reference is None:
            object.__setattr__(self, "reference", np.zeros(self.coeffs.shape[1], dtype=np.float32))

    @property
    def num_frames(self) -> int:
        return int(self.coeffs.shape[0])

    def slice(self, name: str) -> np.ndarray:
        start, stop = LAYOUTS[self.layout][name]
        return self.coeffs[:, start:stop]


@dataclass(frozen=True)
class Request:
    """One generation request. None means "the persona's value"."""

    persona: str = "mkbhd"
    prompt: str | None = None  # what to explain; or give `script`
    script: str | None = None  # a script to speak instead (markup honoured, plain text annotated)
    temperature: float | None = None  # LLM temperature, 0..2
    max_tokens: int | None = None  # script length bound, 16..2048
    seed: int = 0  # fixes the offline writer, pause draws, blinks and head drift
    voice: str | None = None  # heart | joe
    speed: float | None = None  # speaking rate, 0.5..2
    script_backend: str = "auto"  # auto | offline | gemini | openai
    speech_backend: str = "auto"  # auto | hibari | piper | xtts
    motion_backend: str = "auto"  # auto | embedded | sadtalker
    enhancer: str = "auto"  # auto | none | gfpgan
    portrait: str | None = None  # path to the user's portrait (None: the persona's)
    reference_wav: str | None = None  # the user's voice sample for cloning (xtts only; 3-30 s)
    framing: str = "crop"  # crop | full
    still: bool = False  # hold the head, animate only the face
    governor: dict[str, Any] = field(default_factory=dict)  # GovernorConfig overrides

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StageEvent:
    """What a stage produced: stage name, job, backend, wall seconds, its result."""

    stage: str  # script_draft | script | speech | motion | governor | video | done
    job_id: str
    backend: str = ""
    seconds: float = 0.0
    result: Any = None
    notice: str = ""


@dataclass(frozen=True)
class BackendChoice:
    """What a stage will run and why, chosen once before any work (the manifest's ``backends``)."""

    backend: str  # a backend name, e.g. offline | hibari | embedded | none
    why: str  # one sentence for the manifest and the page's "auto picked" line
    target: Any = None  # what the stage needs to run it (the script writer's plan, the voice)

    def to_dict(self) -> dict[str, str]:
        return {"backend": self.backend, "why": self.why}
