"""The offline script writer: a persona-styled explainer built from the prompt
alone, with no model and no network.

It is honest about what it is: a structured template (hook, two body beats
on the prompt's subject, close) phrased in the persona's tone, filled with the
subject and key words of the prompt, deterministic for a seed, then annotated
with pauses and emphasis by the persona's rules.
"""

from __future__ import annotations

import random
import re

from ..personas import Persona
from ..types import ScriptIntent
from .annotate import annotate
from .llm_common import target_words

_LEADING = re.compile(
    r"^(?:please\s+)?(?:can you\s+|could you\s+)?"
    r"(?:explain|describe|tell (?:me|us) about|talk about|review|introduce|summari[sz]e|present|"
    r"give (?:me|us) (?:an? )?(?:overview|rundown|intro(?:duction)?) of|what (?:is|are)|what's|"
    r"how (?:does|do|to)|why (?:is|are|does|do)|show (?:me|us))\s+",
    re.IGNORECASE,
)

_TEMPLATES: dict[str, dict[str, list[str]]] = {
    "measured": {
        "hook": [
            "So, {subject}. Let's talk about what actually matters here.",
            "Here's the thing about {subject}. It's simpler than it looks.",
            "Okay, {subject}. I want to get straight to the point.",
        ],
        "body": [
            "First, the big picture. {Subject} is really about {key1}, and that shapes everything else.",
            "The detail most people miss is {key2}. Once you see it, the rest makes sense.",
            "In practice, {key1} is where you notice the difference, day to day.",
            "Then there's {key2}. It's not flashy, but it's the part that holds up over time.",
            "And {key3} is the trade-off. Worth knowing before you decide.",
            "If you only remember one thing, make it {key3}.",
        ],
        "close": [
            "So that's {subject}. Clear, focused, and well worth understanding.",
            "Bottom line: {subject} is better than it first appears. That's the verdict.",
            "That's the short version of {subject}. Thanks for watching.",
        ],
    },
    "energetic": {
        "hook": [
            "Oh my gosh, you guys, {subject}! I am so excited to show you this!",
            "Okay, okay, {subject}! This is honestly the best thing I've looked at all week!",
            "Hi everyone! Today it's {subject}, and trust me, you're going to love it!",
        ],
        "body": [
            "So first, {key1}! That is a massive deal, and it just works!",
            "And then {key2}? Seriously amazing! I did not expect that at all!",
            "The coolest part is {key1}. Like, every single time, it blows my mind!",
            "Plus {key2} makes everything so much faster and more fun!",
            "And don't forget {key3}! It's the little things that make it incredible!",
            "Honestly, {key3} is my favourite part. I cannot stop talking about it!",
        ],
        "close": [
            "So that's {subject}! Go check it out and tell me what you think!",
            "{Subject} is absolutely worth it. Let me know in the comments, and I'll see you next time!",
            "That's {subject} in a nutshell! I love it, and I think you will too!",
        ],
    },
}


def subject_of(prompt: str) -> str:
    """The thing the prompt asks about: 'Explain the M4 Mac Mini' -> 'the M4 Mac Mini'."""
    text = " ".join(prompt.split()).strip().rstrip("?.!")
    previous = None
    while previous != text:
        previous = text
        text = _LEADING.sub("", text).strip()
    text = re.sub(r"\s+(?:works?|is|are)$", "", text, flags=re.IGNORECASE)
    return text or prompt.strip()


def write_offline(prompt: str, persona: Persona, *, max_tokens: int, seed: int = 0) -> ScriptIntent:
    """A persona-styled script for the prompt, as long as an LLM would be asked for (llm_common.target_words).

    Deterministic for (prompt, persona, max_tokens, seed).
    """
    rng = random.Random(f"{persona.id}|{prompt}|{seed}")
    templates = _TEMPLATES[persona.script.tone]
    subject = subject_of(prompt)
    fill = {
        "subject": subject,
        "Subject": subject[:1].upper() + subject[1:],
        # the hook and close name the subject; the body refers back to it
        "key1": "what it does best",
        "key2": "the design choices behind it",
        "key3": "what it asks of you in return",
    }
    body = rng.sample(templates["body"], k=2)
    sentences = [rng.choice(templates["hook"]), *body, rng.choice(templates["close"])]
    word_budget = target_words(max_tokens)  # the same length an LLM is asked for
    texts = [sentence.format(**fill) for sentence in sentences]
    # hook and close always; body beats while they fit
    chosen = [texts[0], texts[-1]]
    for beat in texts[1:-1]:
        if sum(len(t.split()) for t in chosen) + len(beat.split()) <= word_budget:
            chosen.insert(-1, beat)
    script = " ".join(chosen)
    words = script.split()
    if len(words) > word_budget:  # a tiny budget: the hook's first words
        script = " ".join(words[:word_budget]).rstrip(",;:.!?") + "."
    return annotate(script, persona.script)
