"""Atomic-unit splitting: each rule of the issue, offsets, and robustness on arbitrary text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from autogen_ext_memento.pipeline import is_math, regex_token_count, split_units


def texts(src: str) -> list[str]:
    return [u.text for u in split_units(src)]


def test_token_counter_counts_words_digit_chunks_and_punctuation() -> None:
    assert regex_token_count("Hello, world!") == 4
    assert regex_token_count("x = 1234567") == 5  # x, =, 123, 456, 7
    assert regex_token_count("") == 0


def test_sentences_split_at_sentence_ends_and_newlines() -> None:
    src = "The first sentence is here. The second one follows now!\nA new line starts another unit."
    assert texts(src) == [
        "The first sentence is here.",
        "The second one follows now!",
        "A new line starts another unit.",
    ]


def test_fenced_code_is_one_unit() -> None:
    code = "```python\ndef f(x):\n    y = x + 1. \n    return y. \n```"
    src = f"Here is a function that we will test carefully.\n\n{code}\n\nAfter the code block we continue talking."
    units = texts(src)
    assert code in units
    assert len(units) == 3


def test_display_math_kept_whole() -> None:
    disp = "$$\na = b. c = d.\n$$"
    env = "\\begin{align}\nx &= 1. \\\\\ny &= 2.\n\\end{align}"
    br = "\\[ p = q. r = s. \\]"
    src = f"We start with a long sentence here.\n{disp}\nAnd then the environment follows.\n{env}\nFinally the bracket math follows.\n{br}"
    units = texts(src)
    assert disp in units and env in units and br in units


def test_no_split_inside_parentheses_inline_math_or_after_abbreviations() -> None:
    src = (
        "We use the bound (it holds for n > 1. It is sharp.) to conclude the proof here. "
        "The value $a = 1. b = 2$ is fixed by the constraint above. "
        "Many primes work, e.g. seven, and the rest fail, i.e. all even numbers beyond two. "
        "Compare with Fig. 3 for details of the whole construction."
    )
    assert texts(src) == [
        "We use the bound (it holds for n > 1. It is sharp.) to conclude the proof here.",
        "The value $a = 1. b = 2$ is fixed by the constraint above.",
        "Many primes work, e.g. seven, and the rest fail, i.e. all even numbers beyond two.",
        "Compare with Fig. 3 for details of the whole construction.",
    ]


def test_unclosed_parenthesis_does_not_glue_the_rest_of_the_trace() -> None:
    src = "Case 1) is done here now. It was long.\nNext we go on with the second case (unclosed here.\nA fresh line is its own unit."
    assert texts(src)[-1] == "A fresh line is its own unit."


def test_colon_unit_merges_with_the_next() -> None:
    src = "We compute the following:\nthe sum of the first ten squares is 385.\nThat ends the step here."
    assert texts(src)[0] == "We compute the following:\nthe sum of the first ten squares is 385."


def test_math_continued_by_therefore_merges() -> None:
    src = "Expanding both sides now gives the equation.\nx^2 + 2x + 1 = 9\nTherefore x + 1 = 3\nSo we are done with it."
    units = texts(src)
    assert "x^2 + 2x + 1 = 9\nTherefore x + 1 = 3" in units
    assert units[-1] == "So we are done with it."


def test_multiline_math_is_one_unit() -> None:
    src = "Now we simplify the expression step by step.\n3x + 5 = 20\n3x = 15\nx = 5\nThat is the value we wanted."
    assert "3x + 5 = 20\n3x = 15\nx = 5" in texts(src)


def test_short_units_merge_forward_and_last_backward() -> None:
    src = "Ok. Now we proceed with the full computation of things. Done."
    assert texts(src) == ["Ok. Now we proceed with the full computation of things. Done."]
    assert all(regex_token_count(t) >= 5 for t in texts("Hmm. Wait. Let me think about this more carefully now."))


def test_is_math() -> None:
    assert is_math("x^2 + 3x = 10")
    assert is_math("\\frac{a}{b} = c")
    assert not is_math("The answer is that x equals ten.")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab $().:\n`=xT!?\\[]{}", max_size=200))
def test_units_are_exact_ordered_slices_covering_all_text(src: str) -> None:
    units = split_units(src)
    last = 0
    for u in units:
        assert u.text == src[u.start : u.end]
        assert u.text == u.text.strip() and u.text
        assert u.start >= last
        assert src[last : u.start].strip() == ""
        last = u.end
    assert src[last:].strip() == ""
