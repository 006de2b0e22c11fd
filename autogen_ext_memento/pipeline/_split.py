"""Atomic units: splitting a reasoning trace into pieces a block boundary may fall between, and token counting.

A unit is the smallest span the segmentation may cut around. The rules mirror the published pipeline
(``sentence_split.py``): fenced code blocks and display / multi-line math are kept whole; a sentence end inside
parentheses, inline math or right after an abbreviation is not a split; a unit ending in ``:`` merges with the
next; a math line followed by a "therefore/thus/so/hence" math line merges with it; units under
``min_unit_tokens`` tokens merge into a neighbour.

Units keep character offsets into the original text, so a block's text is an exact slice of the trace
(whitespace and newlines included) rather than a re-joined approximation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

TokenCounter = Callable[[str], int]
"""Any function mapping text to a token count (e.g. ``lambda s: len(tokenizer.encode(s))``)."""

# Letters runs, digit runs cut in threes (as cl100k does), and every other non-space character alone: within
# ~15% of cl100k on English/LaTeX reasoning text, and needs no download.
_TOKEN_RE = re.compile(r"[A-Za-z]+|\d{1,3}|[^\sA-Za-z\d]")


def regex_token_count(text: str) -> int:
    """Cheap offline token count: letter runs, 3-digit chunks and single punctuation marks."""
    return len(_TOKEN_RE.findall(text))


@dataclass(frozen=True)
class Unit:
    """One atomic unit: ``text`` is ``source[start:end]`` with surrounding whitespace stripped."""

    text: str
    start: int
    end: int
    kind: str = "text"  # "text", "code" or "math"


_PROTECTED = re.compile(
    r"```.*?(?:```|\Z)"  # fenced code, to its closing fence (or the end of a truncated trace)
    r"|\$\$.*?\$\$"  # display math
    r"|\\\[.*?\\\]"
    r"|\\begin\{([A-Za-z*]+)\}.*?\\end\{\1\}",
    re.S,
)

ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf approx eq eqs fig figs dr mr mrs ms prof no nos resp sec ch al def thm lem prop st jr sr "
    "incl esp min max avg ca viz".split()
)
_CONNECTIVE = re.compile(r"^(?:therefore|thus|so|hence)\b[,:]?\s*", re.I)
_LATEX_CMD = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{3,}")
_MATH_CHARS = re.compile(r"[=<>^≤≥≠±×÷√∑∫]|\\(?:frac|sqrt|cdot|times|le|ge|ne|sum|int)")


def is_math(text: str) -> bool:
    """Whether a unit reads as a formula line rather than prose (at most one real word and a math operator)."""
    body = _LATEX_CMD.sub(" ", text)
    return bool(_MATH_CHARS.search(text)) and len(_WORD.findall(body)) <= 1


def _sentence_cuts(text: str, lo: int, hi: int) -> list[int]:
    """Offsets in ``text[lo:hi]`` (plain text, no protected spans) after which a unit may end."""
    cuts: list[int] = []
    depth = 0
    inline = False  # inside $...$ or \( ... \)
    i = lo
    while i < hi:
        c = text[i]
        if c == "\n":
            # A line break always ends a unit (parenthesis/inline-math state is per line: an unbalanced "(" must
            # not glue the rest of the trace together).
            cuts.append(i + 1)
            depth, inline = 0, False
        elif c == "\\" and i + 1 < hi and text[i + 1] in "()":
            inline = text[i + 1] == "("
            i += 1
        elif c == "$":
            inline = not inline
        elif inline:
            pass
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        elif c in ".!?" and depth == 0 and i + 1 < hi and text[i + 1] in " \t":
            if c != "." or not _is_abbreviation(text, lo, i):
                cuts.append(i + 1)
        i += 1
    return cuts


def _is_abbreviation(text: str, lo: int, dot: int) -> bool:
    j = dot
    while j > lo and (text[j - 1].isalpha() or text[j - 1] == "."):
        j -= 1
    word = text[j:dot].lower().rstrip(".")
    return word in ABBREVIATIONS


def _raw_units(text: str) -> list[Unit]:
    pieces: list[tuple[int, int, str]] = []
    pos = 0
    for m in _PROTECTED.finditer(text):
        if m.start() > pos:
            pieces.append((pos, m.start(), "plain"))
        pieces.append((m.start(), m.end(), "code" if m.group(0).startswith("```") else "math"))
        pos = m.end()
    if pos < len(text):
        pieces.append((pos, len(text), "plain"))
    units: list[Unit] = []
    for lo, hi, kind in pieces:
        if kind != "plain":
            units.append(_make(text, lo, hi, kind))
            continue
        start = lo
        for cut in [*_sentence_cuts(text, lo, hi), hi]:
            if cut > start:
                u = _make(text, start, cut, "text")
                if u.text:
                    units.append(u)
                start = cut
    return [u for u in units if u.text]


def _make(text: str, lo: int, hi: int, kind: str) -> Unit:
    seg = text[lo:hi]
    lstrip = len(seg) - len(seg.lstrip())
    rstrip = len(seg) - len(seg.rstrip())
    s, e = lo + lstrip, hi - rstrip
    body = text[s:e] if e > s else ""
    if kind == "text" and body and is_math(body):
        kind = "math"
    return Unit(body, s, max(e, s), kind)


def _join(text: str, a: Unit, b: Unit) -> Unit:
    kind = a.kind if a.kind == b.kind else ("code" if "code" in (a.kind, b.kind) else "text")
    return Unit(text[a.start : b.end], a.start, b.end, kind)


def split_units(text: str, count_tokens: TokenCounter = regex_token_count, min_unit_tokens: int = 5) -> list[Unit]:
    """Split a trace into atomic units (see the module docstring for the rules), in order, covering all text."""
    units = _raw_units(text)
    # Multi-line math: consecutive formula lines form one display.
    merged: list[Unit] = []
    for u in units:
        prev = merged[-1] if merged else None
        if prev is not None and prev.kind == "math" and u.kind == "math" and "\n\n" not in text[prev.end : u.start]:
            merged[-1] = _join(text, prev, u)
        elif (
            prev is not None
            and prev.kind == "math"
            and _CONNECTIVE.match(u.text)
            and is_math(_CONNECTIVE.sub("", u.text, count=1))
        ):
            merged[-1] = Unit(text[prev.start : u.end], prev.start, u.end, "math")
        else:
            merged.append(u)
    # A unit ending in ":" introduces what follows.
    out: list[Unit] = []
    for u in merged:
        if out and out[-1].text.endswith(":"):
            out[-1] = _join(text, out[-1], u)
        else:
            out.append(u)
    # Short units merge forward (the last one backward).
    final: list[Unit] = []
    carry: Unit | None = None
    for u in out:
        cur = _join(text, carry, u) if carry is not None else u
        if count_tokens(cur.text) < min_unit_tokens:
            carry = cur
        else:
            final.append(cur)
            carry = None
    if carry is not None:
        if final:
            final[-1] = _join(text, final[-1], carry)
        else:
            final.append(carry)
    return final
