import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persona_video.personas import load_persona
from persona_video.script import script_from_text, validate_prompt, write_script
from persona_video.script.annotate import annotate
from persona_video.script.llm_common import target_words
from persona_video.script.markup import MarkupError, normalize, parse_markup, to_markup
from persona_video.script.offline import topic_of, write_offline
from persona_video.types import ScriptIntent, Segment

SEED_EXAMPLE = "So, [pause 0.4] this new *M4 Mac Mini* is *seriously* fast."


def test_seed_example_parses():
    intent = parse_markup(SEED_EXAMPLE)
    assert [s.intent_type for s in intent.segments] == [
        "neutral",
        "pause",
        "neutral",
        "emphasis",
        "neutral",
        "emphasis",
        "neutral",
    ]
    assert intent.segments[1].pause_s == 0.4
    assert intent.segments[3].text == "M4 Mac Mini" and intent.segments[3].intensity == 1.0
    assert to_markup(intent) == SEED_EXAMPLE


_text = st.text(alphabet=st.sampled_from(list("abcXYZ 019.,!?'*[]{}\\-")), min_size=1, max_size=20)
_segment = st.one_of(
    st.builds(lambda t: Segment(t, "neutral", 0.0), _text),
    st.builds(lambda t, i: Segment(t, "emphasis", i), _text, st.floats(0, 1)),
    st.builds(lambda p: Segment("", "pause", 0.0, p), st.one_of(st.none(), st.floats(0.05, 3.0))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_segment, min_size=1, max_size=8))
def test_markup_round_trips(segments):
    intent = normalize(ScriptIntent(tuple(segments)))
    if not any(s.intent_type != "pause" for s in intent.segments):
        return
    text = to_markup(intent)
    assert parse_markup(text) == intent
    assert to_markup(parse_markup(text)) == text


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("This is *broken.", "column 9"),
        ("Wait [pauze 0.4] here.", "column 6"),
        ("Wait [pause abc] here.", "not a number"),
        ("Wait [pause 9] here.", "out of range"),
        ("Odd } here", "column 5"),
        ("*strong*{1.7} word", "out of range"),
        ("[pause 0.4]", "no words"),
    ],
)
def test_broken_markup_points_at_the_position(text, where):
    with pytest.raises(MarkupError, match=where):
        parse_markup(text)


def test_annotator_keeps_pauses_and_emphasis_within_the_persona():
    text = "So, the new M4 Mac Mini is the fastest desktop at $599. It has 16 GB of memory, and it is TINY."
    for persona_id in ("mkbhd", "ijustine"):
        style = load_persona(persona_id).script
        intent = annotate(text, style)
        pauses = [s.pause_s for s in intent.segments if s.intent_type == "pause"]
        assert pauses and all(style.pause_range_s[0] <= p <= style.pause_range_s[1] for p in pauses)
        emphasised = " ".join(s.text for s in intent.segments if s.intent_type == "emphasis")
        assert "$599" in emphasised or "16" in emphasised
        assert to_markup(parse_markup(to_markup(intent))) == to_markup(intent)
    calm = annotate(text, load_persona("mkbhd").script)
    lively = annotate(text, load_persona("ijustine").script)
    count = lambda i: sum(1 for s in i.segments if s.intent_type == "emphasis")  # noqa: E731
    assert count(lively) > count(calm)


def test_offline_writer_is_persona_styled_deterministic_and_bounded():
    mkbhd, ijustine = load_persona("mkbhd"), load_persona("ijustine")
    calm = write_offline("Explain the M4 Mac Mini", mkbhd, max_tokens=400, seed=1)
    assert calm == write_offline("Explain the M4 Mac Mini", mkbhd, max_tokens=400, seed=1)
    lively = write_offline("Explain the M4 Mac Mini", ijustine, max_tokens=400, seed=1)
    assert "M4 Mac Mini" in calm.spoken_text and "M4 Mac Mini" in lively.spoken_text
    assert lively.spoken_text.count("!") > calm.spoken_text.count("!")
    short = write_offline("Explain the M4 Mac Mini", mkbhd, max_tokens=200, seed=1)
    assert len(short.spoken_text.split()) <= target_words(200) < len(calm.spoken_text.split())


@pytest.mark.parametrize("max_tokens", [16, 100, 200, 300, 400])
@pytest.mark.parametrize("persona", ["mkbhd", "ijustine"])
def test_offline_writer_fits_the_budget_in_whole_sentences(max_tokens, persona):
    for seed in range(6):
        text = write_offline("Explain black holes", load_persona(persona), max_tokens=max_tokens, seed=seed).spoken_text
        assert len(text.split()) <= target_words(max_tokens)
        assert "black holes" in text.lower() and text.endswith((".", "!", "?"))
        # sentences are dropped whole: none of the templates' sentences ends on these words
        assert not text.rstrip(".!?").endswith((" than they", " worth", " the", " and", " to"))


@pytest.mark.parametrize(
    ("prompt", "subject", "question", "plural"),
    [
        ("Explain the M4 Mac Mini", "the M4 Mac Mini", "", False),
        ("Can you please explain black holes?", "black holes", "", True),
        ("tips for better sleep", "tips for better sleep", "", True),
        ("Tell me about the physics of rainbows", "the physics of rainbows", "", False),
        ("What are transformers in machine learning?", "transformers in machine learning", "", True),
        ("what is CRISPR", "CRISPR", "", False),
        (
            "Can you explain how does a heat pump work?",
            "how does a heat pump work",
            "how does a heat pump work?",
            False,
        ),
        ("Why is the sky blue", "why is the sky blue", "why is the sky blue?", False),
        ("how to bake sourdough bread", "how do you bake sourdough bread", "how do you bake sourdough bread?", False),
        (
            "What is USB-C and why does it matter?",
            "what is USB-C and why does it matter",
            "what is USB-C and why does it matter?",
            False,
        ),
        ("Compare iPhone and Android", "iPhone and Android", "", True),
        ("I want to learn about black holes", "black holes", "", True),
        ("The history of the internet", "the history of the internet", "", False),
    ],
)
def test_offline_writer_reads_the_topic_and_keeps_a_question_a_question(prompt, subject, question, plural):
    topic = topic_of(prompt)
    assert (topic.subject, topic.question, topic.plural) == (subject, question, plural)
    text = write_offline(prompt, load_persona("mkbhd"), max_tokens=400, seed=0).spoken_text
    if question:  # restated as the question it is, capitalised where a sentence starts
        assert question[1:] in text and "?" in text
    else:
        assert subject in text
    # the body says nothing that assumes what the topic is (a product, a feature)
    assert "what it does best" not in text and " is are " not in text


def test_write_script_without_key_is_offline_and_says_so():
    script = write_script("Explain the M4 Mac Mini", load_persona("mkbhd"), env={})
    # the user is told the script is a template and how to get one about the topic
    assert script.backend == "offline" and "template" in script.notice and "fetch llm" in script.notice
    assert parse_markup(script.markup) == script.intent
    # chosen by name, the template says nothing
    assert write_script("Explain the M4 Mac Mini", load_persona("mkbhd"), env={}, backend="offline").notice == ""


def test_gemini_failure_falls_back_with_the_reason():
    env = {
        "GEMINI_API_KEY": "k",
        "PERSONA_VIDEO_GEMINI_BASE_URL": "http://127.0.0.1:9",
        "PERSONA_VIDEO_GEMINI_TIMEOUT_S": "2",
    }
    script = write_script("Explain the M4 Mac Mini", load_persona("mkbhd"), env=env)
    assert script.backend == "offline" and "Gemini" in script.notice and "offline writer" in script.notice


@pytest.mark.parametrize("prompt", ["", "   \n", "x" * 5000, None])
def test_bad_prompts_are_clear_errors(prompt):
    with pytest.raises(ValueError, match="prompt"):
        validate_prompt(prompt)


def test_given_script_markup_is_honoured_and_plain_text_annotated():
    persona = load_persona("ijustine")
    given = script_from_text(SEED_EXAMPLE, persona)
    assert given.backend == "given" and given.markup == SEED_EXAMPLE
    plain = script_from_text("Hello there, this is the M4 Mac Mini. It is fast.", persona)
    assert any(s.intent_type == "pause" for s in plain.intent.segments)
    assert any(s.intent_type == "emphasis" for s in plain.intent.segments)
