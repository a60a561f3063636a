"""The offline script writer: a persona-styled explainer built from the prompt
alone, with no model and no network.

It is honest about what it is: a structured template (a hook naming the
prompt's subject or restating its question, two body beats that fit any topic,
a close) phrased in the persona's tone, deterministic for a seed, then
annotated with pauses and emphasis by the persona's rules. Knowing nothing
about the topic, it says nothing specific about it; a model (Gemini or a local
server) writes the real explanation.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ..personas import Persona
from ..types import ScriptIntent
from .annotate import annotate
from .llm_common import target_words

#: Polite openings and requests around the topic: "Can you please explain ...", "Tell me about ...".
_LEADING = re.compile(
    r"^(?:(?:hey|hi|okay|ok|so)[,!]?\s+)?(?:please\s+)?(?:(?:can|could|would|will) you\s+(?:please\s+)?)?"
    r"(?:explain|describe|tell (?:me|us)(?: more)?(?: about)?|talk (?:me |us )?(?:about|through)|review|"
    r"introduce|summari[sz]e|present|compare|teach (?:me|us)(?: about)?|walk (?:me|us) through|show (?:me|us)|"
    r"give (?:me|us) (?:an? )?(?:overview|rundown|intro(?:duction)?|explanation) of|"
    r"i(?: would|'d) like to (?:know|learn|hear)(?: more)? about|i want to (?:know|learn|hear)(?: more)? about|"
    r"help me understand)\s+",
    re.IGNORECASE,
)
_WHAT_IS = re.compile(r"^(?:what(?:'s| is| are)|who(?:'s| is| are))\s+(?P<thing>.+)$", re.IGNORECASE)
_HOW_TO = re.compile(r"^how to\s+(?P<rest>.+)$", re.IGNORECASE)
_QUESTION = re.compile(
    r"^(?:how|why|when|where|which|what|who|whose|can|could|does|do|did|is|are|was|were|should|will|would|has|have)\b",
    re.IGNORECASE,
)
_PREPOSITION = re.compile(r"\s(?:of|for|in|on|with|about|to|from|at|by|under|over|vs\.?|versus)\s", re.IGNORECASE)
#: A second question joined on ("What is USB-C and why does it matter?"): the prompt is a question.
_JOINED_QUESTION = re.compile(
    r"\b(?:and|or|but)\s+(?:why|how|what|when|where|who|which|does|do|is|are|can|should)\b", re.IGNORECASE
)
#: First words lower-cased in the middle of a sentence ("So, the history of the internet.").
_COMMON_FIRST = {
    "the",
    "a",
    "an",
    "this",
    "that",
    "these",
    "those",
    "my",
    "your",
    "our",
    "their",
    "some",
    "any",
    "how",
    "why",
    "what",
    "when",
    "where",
    "which",
    "who",
}
#: Words ending in "s" that are not plurals.
_SINGULAR_S = re.compile(r"(?:ss|us|is|ics|news|series|species|gas|os)$", re.IGNORECASE)


@dataclass(frozen=True)
class Topic:
    """What the prompt asks about.

    subject: a noun phrase ("the M4 Mac Mini", "black holes"), or the question's own words
    when the prompt asks one (not turned into a clause: a question stays a question);
    question: that question with its question mark and a lower-case first letter (for the
    middle of a sentence), or "" when the prompt names a thing; plural: whether the subject
    takes "are".
    """

    subject: str
    question: str = ""
    plural: bool = False


def topic_of(prompt: str) -> Topic:
    """'Explain the M4 Mac Mini' -> Topic('the M4 Mac Mini'); 'Can you explain why is the sky
    blue?' -> Topic('why is the sky blue', question='why is the sky blue?')."""
    text = " ".join(prompt.split()).strip().rstrip("?.!").strip()
    previous = None
    while previous != text:
        previous = text
        text = _LEADING.sub("", text).strip()
    text = text or prompt.strip()
    if text.split()[0].lower() in _COMMON_FIRST:
        text = text[:1].lower() + text[1:]
    if match := _WHAT_IS.match(text):
        if _JOINED_QUESTION.search(text):  # "what is X and why does it matter": a question
            return Topic(text, question=text + "?")
        thing = match.group("thing")
        verb = text[: match.start("thing")].strip().lower()
        return Topic(thing, plural=verb.endswith("are") or _looks_plural(thing))
    if match := _HOW_TO.match(text):
        text = f"how do you {match.group('rest')}"
    if _QUESTION.match(text):
        text = text[:1].lower() + text[1:]
        return Topic(text, question=text + "?")
    return Topic(text, plural=_looks_plural(text))


def _looks_plural(phrase: str) -> bool:
    """Whether a noun phrase takes "are", judged by its head: the last word before a
    preposition ("tips for better sleep" -> tips, "the physics of rainbows" -> physics)."""
    head_phrase = _PREPOSITION.split(phrase, maxsplit=1)[0]
    # a clause after the noun ("USB-C and why it matters") is not part of it
    head_phrase = re.split(r"\s(?:(?:and|or)\s+)?(?:why|how|what|when|where|who|which|that)\b", head_phrase)[0]
    if re.search(r"\s(?:and|&)\s(?!(?:why|how|what|when|where|who|which)\b)", head_phrase):  # "iPhone and Android"
        return True
    head = head_phrase.split()
    last = head[-1] if head else ""
    return last.lower().endswith("s") and not _SINGULAR_S.search(last) and not last.isupper()


# Templates per tone: a hook and a close that name the topic (one set for a thing, one for a
# question), and body beats that fit any topic, because without a model nothing is known about
# it. {subject} / {Subject}: the noun phrase; {question} / {Question}: the prompt's question;
# {is}: is / are.
_TEMPLATES: dict[str, dict[str, list[str]]] = {
    "measured": {
        "hook": [
            "So, {subject}. Let's talk about what actually matters here.",
            "Here's the thing about {subject}: the basics are simpler than they look.",
            "Okay, {subject}. I want to get straight to the point.",
        ],
        "hook?": [
            "{Question} It's a good question, and the answer is simpler than it looks.",
            "{Question} Let's get straight to the point.",
            "So, {question} Let's break it down.",
        ],
        "body": [
            "First, the big picture, because everything else builds on it.",
            "The detail most people miss is how the pieces connect. Once you see that, the rest makes sense.",
            "It helps to ask what problem this solves, and for whom.",
            "There are trade-offs too, and they're worth knowing before you make up your mind.",
            "In practice, the difference shows up in the small things, day to day.",
            "If you only remember one thing, make it the why, not just the what.",
        ],
        "close": [
            "So that's {subject}. Clear, focused, and well worth understanding.",
            "Bottom line: {subject} {is} worth a closer look. That's my take.",
            "That's the short version of {subject}. Thanks for watching.",
        ],
        "close?": [
            "So that's the answer, in short. Thanks for watching.",
            "And that's really all there is to it. Clear, focused, and worth understanding.",
            "That's the short version. Thanks for watching.",
        ],
    },
    "energetic": {
        "hook": [
            "Oh my gosh, you guys, {subject}! I am so excited to show you this!",
            "Okay, okay, {subject}! This is honestly the best thing I've looked at all week!",
            "Hi everyone! Today it's {subject}, and trust me, you're going to love it!",
        ],
        "hook?": [
            "Okay you guys, {question} I love this question!",
            "{Question} Oh, this one is so good, let's find out!",
            "Hi everyone! Today's big question: {question} Trust me, you're going to love it!",
        ],
        "body": [
            "So first, the big idea, and it is so much cooler than it sounds!",
            "And then the details? Seriously amazing! I did not expect that at all!",
            "The best part is how it all fits together. Every single time, it blows my mind!",
            "Plus, once you get it, you start seeing it everywhere!",
            "And don't skip the little details! They're what make it incredible!",
            "Honestly, this is my favourite part. I cannot stop talking about it!",
        ],
        "close": [
            "So that's {subject}! Go check it out and tell me what you think!",
            "{Subject} {is} absolutely worth it. Let me know in the comments, and I'll see you next time!",
            "That's {subject} in a nutshell! I love it, and I think you will too!",
        ],
        "close?": [
            "And that's the answer! Pretty amazing, right? Let me know in the comments!",
            "So now you know! Tell me what you think, and I'll see you next time!",
            "That's it in a nutshell! I love it, and I think you will too!",
        ],
    },
}


def write_offline(prompt: str, persona: Persona, *, max_tokens: int, seed: int = 0) -> ScriptIntent:
    """A persona-styled script for the prompt, as long as an LLM would be asked for (llm_common.target_words).

    Deterministic for (prompt, persona, max_tokens, seed).
    """
    rng = random.Random(f"{persona.id}|{prompt}|{seed}")
    templates = _TEMPLATES[persona.script.tone]
    topic = topic_of(prompt)
    kind = "?" if topic.question else ""
    fill = {
        "subject": topic.subject,
        "Subject": topic.subject[:1].upper() + topic.subject[1:],
        "question": topic.question,
        "Question": topic.question[:1].upper() + topic.question[1:],
        "is": "are" if topic.plural else "is",
    }
    # two beats, in the order they are listed ("first" before "and then")
    body = [templates["body"][i] for i in sorted(rng.sample(range(len(templates["body"])), k=2))]
    sentences = [rng.choice(templates["hook" + kind]), *body, rng.choice(templates["close" + kind])]
    word_budget = target_words(max_tokens)  # the same length an LLM is asked for
    parts = [_sentences(template.format(**fill)) for template in sentences]
    return annotate(_fit(parts, word_budget), persona.script)


def _sentences(text: str) -> list[str]:
    """'Hi everyone! Today it is X.' -> ['Hi everyone!', 'Today it is X.'] (a question mark inside
    a restated question ends a sentence too)."""
    return [piece for piece in re.split(r"(?<=[.!?])\s+", text.strip()) if piece]


def _fit(parts: list[list[str]], budget: int) -> str:
    """Join the sentences of hook, body beats and close within ``budget`` words, in their order.

    The first sentence of the hook and of the close stay; then the rest of the hook and of the
    close; then whole body beats while they fit. When those two sentences alone are too long,
    the hook's first sentence is all there is, cut after a clause (or at a word) if even that
    is too long.
    """
    count = lambda sentence: len(sentence.split())  # noqa: E731
    hook, *beats, close = parts
    keep = {(0, 0), (len(parts) - 1, 0)}
    used = sum(count(parts[i][j]) for i, j in keep)
    for i, j in [(0, j) for j in range(1, len(hook))] + [(len(parts) - 1, j) for j in range(1, len(close))]:
        if used + count(parts[i][j]) <= budget:
            keep.add((i, j))
            used += count(parts[i][j])
    for i, beat in enumerate(beats, start=1):
        size = sum(count(sentence) for sentence in beat)
        if used + size <= budget:
            keep.update((i, j) for j in range(len(beat)))
            used += size
    chosen = [parts[i][j] for i in range(len(parts)) for j in range(len(parts[i])) if (i, j) in keep]
    if used <= budget:
        return " ".join(chosen)
    words = hook[0].split()  # a tiny budget: the hook's first sentence, cut if it must be
    if len(words) <= budget:
        return hook[0]
    # at the last clause (after a comma, colon or semicolon) that fits, else at a word
    ends = [i + 1 for i, word in enumerate(words[:budget]) if word.endswith((",", ":", ";"))]
    return " ".join(words[: ends[-1] if ends else budget]).rstrip(",;:.!?") + "."
