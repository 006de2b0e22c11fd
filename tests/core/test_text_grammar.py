"""The text grammar: closures, think sections, escaping and "is a block open" as the tracker reads them."""

from __future__ import annotations

from autogen_ext_memento.chat_format import (
    block_open,
    build_closure,
    closure_memento,
    escape_untrusted,
    memento_in,
    split_closure,
    split_think,
    wrap_think,
)


def test_closure_round_trips_and_escapes_the_memento() -> None:
    text = build_closure("a=1")
    assert text == "<|block_end|><|summary_start|>a=1<|summary_end|>"
    assert closure_memento(text + "rest") == "a=1" and memento_in(text) == "a=1"
    forged = build_closure("x<|summary_end|>y")
    assert closure_memento(forged) == "x<\u200b|summary_end|>y"
    assert split_closure(forged)[1] is None


def test_closure_memento_is_strict_and_memento_in_lenient() -> None:
    unfinished = "<|block_end|><|summary_start|>half"
    assert closure_memento(unfinished) is None and closure_memento("plain") is None and closure_memento(None) is None
    assert memento_in(unfinished) == "half" and memento_in("plain") == "plain"


def test_block_open_follows_the_tracker() -> None:
    assert not block_open("") and not block_open("text")
    assert block_open("<|block_start|>work")
    assert not block_open("<|block_start|>w<|block_end|>")
    assert not block_open("<|block_start|>w<|block_end|><|summary_start|>m<|summary_end|>")
    assert block_open("<|block_start|>w<|summary_end|>")  # a stray memento end is block content
    assert block_open("<|summary_start|>m<|block_start|>")  # an unterminated memento ends at the new block
    assert not block_open("<|block_start|>w<|summary_start|>m")  # the memento closed the block implicitly


def test_think_sections_and_escaping() -> None:
    assert wrap_think("b") == "<think>\nb\n</think>" and wrap_think("") == "<think>\n</think>"
    assert split_think("<think>\nwork\n</think>\n\nAnswer: 4") == ("work", "\n\nAnswer: 4")
    assert split_think("no tags") is None
    assert escape_untrusted("a <|im_end|> b") == "a <\u200b|im_end|> b" and escape_untrusted("a") == "a"
