"""The pipeline's prompts (package data under ``prompts/``) and robust parsers for the LLM's answers."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from ._llm import ParseError

PROMPTS = PROMPT_NAMES = (
    "boundary_score",
    "boundary_score_user",
    "compress",
    "compress_user",
    "judge",
    "judge_user",
    "rewrite_user",
)


@functools.cache
def load_prompt(name: str) -> str:
    """The text of a bundled prompt template."""
    if name not in PROMPT_NAMES:
        raise KeyError(f"unknown prompt {name!r}; known: {', '.join(PROMPT_NAMES)}")
    return resources.files("autogen_ext_memento.pipeline").joinpath(f"prompts/{name}.txt").read_text("utf-8")


def fill(template: str, **values: object) -> str:
    """Substitute ``{{name}}`` placeholders (values are inserted verbatim, so braces and ``$`` in them are safe)."""
    out = template
    for k, v in values.items():
        out = out.replace("{{" + k + "}}", str(v))
    missing = re.findall(r"\{\{(\w+)\}\}", out)
    if missing:
        raise KeyError(f"prompt placeholders left unfilled: {missing}")
    return out


# --- boundary scores ---------------------------------------------------------------------------------------------

_SCORE_LINE = re.compile(r"(?:^|\n)\s*[*#>\-\s]*B?\s*(\d+)\s*\**\s*[:=\-\u2013)]\s*\**\s*(-?\d+(?:\.\d+)?)", re.I)


def parse_boundary_scores(text: str, wanted: Sequence[int]) -> dict[int, float]:
    """Scores for the boundaries ``wanted`` from ``B<i>: <score>`` lines, clamped to 0–3.

    Tolerates markdown decoration, other separators (``=``, ``-``, ``)``), extra chatter and extra boundaries;
    a bare list of numbers with exactly one per wanted boundary is accepted too. Missing boundaries raise
    :class:`ParseError`.
    """
    found: dict[int, float] = {}
    for m in _SCORE_LINE.finditer(text):
        i = int(m.group(1))
        if i in wanted and i not in found:
            found[i] = min(3.0, max(0.0, float(m.group(2))))
    missing = [i for i in wanted if i not in found]
    if missing:
        bare = re.findall(r"(?<![\w.])([0-3](?:\.\d+)?)(?![\w.])", text)
        if not found and len(bare) == len(wanted):
            return {i: float(v) for i, v in zip(wanted, bare, strict=True)}
        raise ParseError(f"no score for boundaries {missing[:8]}; write one 'B<i>: <score>' line per boundary")
    return found


# --- summaries ---------------------------------------------------------------------------------------------------

_SUMMARY_HEAD = re.compile(
    r"^[ \t*#>\-]*(?:memento|summary)\s*(?:of\s+block\s+)?#?\s*(\d+)\s*\**\s*[:.)\-]\**[ \t]*", re.I | re.M
)


def parse_summaries(text: str, wanted: Sequence[int]) -> dict[int, str]:
    """``Summary <i>: …`` sections (multi-line) for the blocks ``wanted``; raise if none of them is present.

    Blocks that are missing are simply absent from the result (the caller re-asks for them one by one);
    empty sections count as missing.
    """
    heads = list(_SUMMARY_HEAD.finditer(text))
    out: dict[int, str] = {}
    for k, h in enumerate(heads):
        nxt = heads[k + 1] if k + 1 < len(heads) else None
        i = int(h.group(1))
        body = text[h.end() : nxt.start() if nxt is not None else len(text)].strip()
        if i in wanted and body and i not in out:
            out[i] = body
    if not out:
        if len(wanted) == 1 and text.strip() and not heads:
            return {wanted[0]: text.strip()}
        raise ParseError(f"no 'Summary <i>:' section for blocks {list(wanted)[:8]}")
    return out


# --- judge -------------------------------------------------------------------------------------------------------

_JUDGE_SCORE = re.compile(r"SCORE\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*10|out of 10)?", re.I)
_JUDGE_FEEDBACK = re.compile(r"FEEDBACK\s*[:=]?\s*\**\s*(.*)", re.I | re.S)


@dataclass(frozen=True)
class Verdict:
    """A judge's score out of 10 (clamped to 0–10) and its feedback."""

    score: float
    feedback: str


def parse_verdict(text: str) -> Verdict:
    """Parse ``SCORE: X/10`` and ``FEEDBACK: …`` (markdown, ``X out of 10`` and missing feedback tolerated)."""
    m = _JUDGE_SCORE.search(text)
    if m is None:
        m2 = re.search(r"(-?\d+(?:\.\d+)?)\s*/\s*10", text)
        if m2 is None:
            raise ParseError("no 'SCORE: X/10' line")
        score = float(m2.group(1))
    else:
        score = float(m.group(1))
    fb = _JUDGE_FEEDBACK.search(text)
    feedback = fb.group(1).strip() if fb else text[m.end() :].strip() if m else ""
    return Verdict(min(10.0, max(0.0, score)), feedback)
