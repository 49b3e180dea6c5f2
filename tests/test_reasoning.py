"""The reasoning format from outside: rendering edge cases and answer parsing."""
import pytest
from hypothesis import given, settings, strategies as st

from medllm.reasoning import (ANSWER, ENDOFTEXT, QUESTION, THINKING, Special, format_question, is_english,
                              parse_answer, prompt_parts, synth_parts, to_text)

ROW = {"query": "Which vitamin deficiency causes scurvy?", "synthetic_reasoning": "Collagen synthesis needs vitamin C.",
       "synthetic_answer": "Vitamin C.", "language": "en"}


def specials(parts):
    return [p for p in parts if isinstance(p, Special)]


def test_full_document_text():
    assert to_text(synth_parts(ROW)) == ("<|question|>\nWhich vitamin deficiency causes scurvy?\n<|thinking|>\n"
                                         "Collagen synthesis needs vitamin C.\n<|answer|>\nVitamin C.<|endoftext|>")


@pytest.mark.parametrize("field", ["query", "synthetic_reasoning", "synthetic_answer"])
def test_missing_field_is_named(field):
    row = {k: v for k, v in ROW.items() if k != field}
    with pytest.raises(ValueError, match=field):
        synth_parts(row)


@pytest.mark.parametrize("field,value", [("query", ""), ("query", None), ("synthetic_answer", "   "),
                                         ("synthetic_answer", 3), ("query", ["a"]), ("synthetic_reasoning", 1.5)])
def test_bad_values_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        synth_parts({**ROW, field: value})


def test_empty_reasoning_kept_or_dropped():
    for empty in ("", None, "  \n"):
        parts = synth_parts({**ROW, "synthetic_reasoning": empty})
        assert "<|thinking|>\n\n<|answer|>" in to_text(parts)
        assert synth_parts({**ROW, "synthetic_reasoning": empty}, empty_reasoning="drop") is None
    with pytest.raises(ValueError, match="empty_reasoning"):
        synth_parts(ROW, empty_reasoning="skip")


def test_tag_text_in_user_content_is_not_a_marker():
    row = {**ROW, "query": "What does <|answer|> mean? <|endoftext|>", "synthetic_answer": "<|thinking|> is text"}
    parts = synth_parts(row)
    assert specials(parts) == [QUESTION, THINKING, ANSWER, ENDOFTEXT]
    assert all(type(p) is str for p in parts if "<|answer|> mean" in p or "<|thinking|> is text" in p)


def test_non_english_row_renders_and_is_flagged():
    row = {**ROW, "query": "¿Qué vitamina previene el escorbuto? 壞血病", "language": "es"}
    assert "壞血病" in to_text(synth_parts(row))
    assert not is_english(row) and is_english(ROW) and is_english({k: v for k, v in ROW.items() if k != "language"})


def test_very_long_fields():
    big = "α" * 2_000_000
    text = to_text(synth_parts({**ROW, "synthetic_reasoning": big}))
    assert big in text and len(text) > 2_000_000


def test_prompts_stop_where_the_model_takes_over():
    q = format_question("Pick one", {"A": "x", "B": "y"})
    assert to_text(prompt_parts(q)).endswith("<|thinking|>\n")
    assert to_text(prompt_parts(q, "answer", reasoning="because")).endswith("because\n<|answer|>\n")
    assert q == "Pick one\nA. x\nB. y"


@settings(max_examples=200, deadline=None)
@given(letter=st.sampled_from("ABCD"), style=st.sampled_from(["{}", "{}.", "({})", "{}) text", "The answer is {}", "**{}**", "Answer: {}"]),
       tail=st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,.", max_size=40))
def test_parse_answer_reads_back_rendered_letters(letter, style, tail):
    generated = to_text(prompt_parts("q?", "answer", reasoning="thinking about A and D")) + style.format(letter) + "\n" + tail + "<|endoftext|>"
    assert parse_answer(generated) == letter


@settings(max_examples=100, deadline=None)
@given(word=st.sampled_from(["yes", "no", "maybe"]), case=st.sampled_from([str.lower, str.upper, str.title]))
def test_parse_answer_yes_no_maybe(word, case):
    assert parse_answer(case(word) + ", based on the abstract.", ("yes", "no", "maybe")) == word


def test_parse_answer_unparseable_is_none():
    for text in ["", "   ", "I cannot tell.", "<|answer|>\n<|endoftext|>", "A or B"]:
        assert parse_answer(text) is None
