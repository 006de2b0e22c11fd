"""The pipeline's roles played by rules: cue-word boundary scores, extractive mementos and a mechanical judge.

* **boundary scoring**: cue words (0 after ``:``/``=`` or before a continuing "Therefore/Thus/Hence/So", 2–3 before
  "Alternatively", "Wait", "Let me verify", "Now", headings, final-answer phrases, 1 after a finished sentence);
* **compression** (extractive): the block's last result sentence first, then the sentences richest in formulas,
  values and named methods, within ~15% of the block's tokens; a rewrite also copies in every formula or value
  the judge's feedback quotes as missing and drops what it calls hallucinated;
* **judge**: the published rubric computed mechanically — key formulas of the block present verbatim (0–3), key
  values (0–2), methods or tools named (0–2), validation recorded (0–1), no value absent from the block (0–1),
  result first (0–1); −1 for process narrative or a memento over 35% of its block — with feedback quoting what
  is missing.

They read the structured blocks the pipeline hands them; their mementos are extracts, good enough to exercise and
measure the pipeline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from ._llm import UsageStats
from ._prompts import Verdict
from ._roles import JudgedMemento
from ._split import regex_token_count, split_units


class HeuristicClientConfig(BaseModel):
    """Memento budgets of :class:`HeuristicRoles` (and of :class:`HeuristicChatCompletionClient`)."""

    model_config = ConfigDict(extra="forbid")

    budget: float = Field(default=0.15, gt=0, le=1, description="first-draft memento size / block tokens")
    rewrite_budget: float = Field(default=0.15, gt=0, le=1, description="rewrite memento size / block tokens")
    min_memento_tokens: int = Field(default=12, ge=1)


_NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
_EQ = re.compile(r"[^.;:,!?\n]*?[=≤≥<>][^;,!?\n]*")
_METHODS = (
    "substitut",
    "factor",
    "induction",
    "contradiction",
    "quadratic formula",
    "binary search",
    "dynamic programming",
    "recursion",
    "memoiz",
    "two pointers",
    "hash",
    "sort",
    "modular",
    "pigeonhole",
    "derivative",
    "integrat",
    "chain rule",
    "conservation",
    "stoichiometr",
    "ideal gas",
    "newton",
    "kirchhoff",
    "ohm",
    "bayes",
    "complement",
    "inclusion-exclusion",
    "telescop",
    "vieta",
    "am-gm",
    "cauchy",
    "greedy",
    "bfs",
    "dfs",
    "dijkstra",
    "complexity",
    "unit test",
    "edge case",
    "limiting reagent",
    "half-life",
    "energy",
    "momentum",
    "counting",
)
_VALIDATION = ("verify", "check", "confirm", "test", "sanity", "plug", "substituting back", "double-check")
_CONCLUDE = ("answer", "therefore", "thus", "hence", "so ", "result", "returns", "gives", "total", "final", "=")
_NARRATIVE = ("the model", "the reasoner", "the author", "then it ", "first it ", "it then ")
_LEAD = re.compile(r"^(?:so|now|okay|ok|hmm|well|wait|alright|let me see|let's see|let me|let's)[,:]?\s+", re.I)
_STRONG = re.compile(
    r"^(?:alternatively|wait|hmm|actually|let me (?:verify|check|double-check|try)|let's (?:verify|check)|"
    r"another approach|final answer|so the (?:final )?answer|#|\*\*|in summary|to summarize|putting it together)",
    re.I,
)
_CLEAR = re.compile(
    r"^(?:now|next|then,? |first|second|third|finally|case \d|step \d|let me|let's|okay|ok,|so,? (?:now|let)|"
    r"to (?:find|check|verify|compute)|we (?:now|next)|for the|consider|moving on|on the other hand)",
    re.I,
)
_CONTINUE = re.compile(r"^(?:therefore|thus|hence|so)\b", re.I)


def _sentences(text: str) -> list[str]:
    return [u.text for u in split_units(text, regex_token_count, 0)]


_WORDISH = re.compile(r"^(?:[A-Za-z]{3,}|so|is|to|of|we|if|as|at|by|in|on|or|an|be|it|So|If|As|We|It)[,.:;!?]?$")


def _equations(text: str) -> list[str]:
    """Formula spans around each ``=``: the maximal run of non-prose tokens (words of 3+ letters end a span)."""
    eqs: list[str] = []
    for s in _sentences(text):
        if s.startswith("```") or s.startswith("<tool_"):
            continue
        toks = s.split()
        for k, t in enumerate(toks):
            if t != "=" and "=" not in t.strip("=<>!"):
                continue
            a = k
            while a > 0 and not _WORDISH.match(toks[a - 1]) and not toks[a - 1].endswith((",", ";", ":")):
                a -= 1
            b = k
            while b + 1 < len(toks) and not _WORDISH.match(toks[b + 1]) and not toks[b].endswith((",", ";", ":")):
                b += 1
            e = " ".join(toks[a : b + 1]).strip(".,;:$")
            if "=" in e and len(e) <= 80 and e not in eqs and not any(e in x for x in eqs):
                eqs.append(e)
    return eqs


def _numbers(text: str) -> list[str]:
    return list(dict.fromkeys(m.group(0) for m in _NUM.finditer(text)))


def _key_values(block: str) -> list[str]:
    tail = block[int(len(block) * 0.6) :]
    vals = [v for v in _numbers(tail) if v not in ("0", "1", "2")]
    return vals[-4:]


def _methods(text: str) -> list[str]:
    low = text.lower()
    found = [m for m in _METHODS if m in low]
    found += [f"tool:{n}" for n in re.findall(r'"name":\s*"([^"]+)"', text)]
    return found


def _has_method(summary: str, method: str) -> bool:
    if method.startswith("tool:"):
        return method[5:] in summary
    return method in summary.lower()


def _tool_memento(block: str) -> str | None:
    calls = re.findall(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", block, re.S)
    outs = re.findall(r"<tool_response>\s*(.*?)\s*</tool_response>", block, re.S)
    if not calls:
        return None
    parts = []
    for k, raw in enumerate(calls):
        try:
            obj = json.loads(raw)
            args = obj.get("arguments", {})
            arg = (
                ", ".join(f"{a}={json.dumps(v, ensure_ascii=False)}" for a, v in args.items())
                if isinstance(args, Mapping)
                else str(args)
            )
            call = f"{obj.get('name', '?')}({arg})"
        except json.JSONDecodeError:
            call = raw[:60]
        out = outs[k] if k < len(outs) else "(no result)"
        out = " ".join(out.split())
        parts.append(f"{call} -> {out[:240]}")
    return "Result: " + "; ".join(parts)


def score_boundary(prev: str, nxt: str) -> int:
    """The cue-word score (0–3) of the boundary between unit ``prev`` and unit ``nxt``."""
    if prev.endswith((":", "=")) or _CONTINUE.match(nxt) or prev.startswith("```") and not prev.endswith("```"):
        return 0
    if _STRONG.match(nxt):
        return 3
    if _CLEAR.match(nxt):
        return 2
    if prev.endswith((".", "!", "?", "```", "$$")):
        return 1
    return 0


def extract_memento(block: str, budget: int, must: Sequence[str] = (), drop: Sequence[str] = ()) -> str:
    """An extractive memento of ``block`` within ``budget`` tokens: its result first, then its richest sentences.

    ``must`` are copied in when missing (what a judge found missing); ``drop`` are removed (what it found made up).
    """
    tool = _tool_memento(block)
    if tool is not None:
        return tool
    sents = [s for s in _sentences(block) if not s.startswith("```")]
    if not sents:
        return block[:200]

    def weight(k: int, s: str) -> float:
        low = s.lower()
        w = 3.0 * ("=" in s) + 2.0 * bool(_NUM.search(s)) + 1.5 * bool(_methods(s))
        w += 1.0 * any(v in low for v in _VALIDATION) + 1.0 * any(c in low for c in _CONCLUDE[:-1])
        return w + 2.0 * k / len(sents)  # later sentences hold the block's results

    result_k = max(range(len(sents)), key=lambda k: (bool(_NUM.search(sents[k]) or "=" in sents[k]), k))
    chosen = [result_k]
    used = regex_token_count(sents[result_k])
    for k in sorted(range(len(sents)), key=lambda k: -weight(k, sents[k])):
        t = regex_token_count(sents[k])
        if k not in chosen and used + t <= budget:
            chosen.append(k)
            used += t
    parts = [_LEAD.sub("", sents[result_k])] + [_LEAD.sub("", sents[k]) for k in sorted(chosen[1:])]
    text = " ".join(p[:1].upper() + p[1:] for p in parts if p)
    extra = [m for m in must if m not in text]
    if extra:
        text += " Also: " + "; ".join(x.rstrip(".") for x in extra) + "."
    for d in drop:
        text = text.replace(d, "")
    return text


def judge_memento(block: str, memento: str) -> Verdict:
    """The published rubric computed mechanically, with feedback quoting what is missing or made up."""
    fb: list[str] = []
    eqs = _equations(block)[-3:]
    if eqs:
        hit = [e for e in eqs if e in memento]
        formulas = 3 * len(hit) // len(eqs)
        fb += [f'Missing formula: "{e}"' for e in eqs if e not in hit]
    else:
        formulas = 3
    vals = _key_values(block)
    if vals:
        hitv = [v for v in vals if re.search(rf"(?<![\w.]){re.escape(v)}(?![\w])", memento)]
        values = 2 * len(hitv) // len(vals)
        fb += [f'Missing value: "{v}"' for v in vals if v not in hitv and not any(v in e for e in eqs)]
    else:
        values = 2
    methods = _methods(block)
    if methods and not any(_has_method(memento, x) for x in methods):
        meth = 0
        name = methods[-1][5:] if methods[-1].startswith("tool:") else methods[-1]
        fb.append(f'Missing method: "{name}"')
    else:
        meth = 2
    val_sents = [s for s in _sentences(block) if any(v in s.lower() for v in _VALIDATION)]
    if val_sents and not any(v in memento.lower() for v in _VALIDATION):
        validation = 0
        fb.append(f'Missing validation: "{val_sents[-1][:120]}"')
    else:
        validation = 1
    block_nums = set(_numbers(block))
    halluc = [v for v in _numbers(memento) if v not in block_nums]
    correct = 0 if halluc else 1
    fb += [f'Hallucinated value: "{v}"' for v in halluc]
    first = re.split(r"(?<=[.;])\s", memento.strip(), maxsplit=1)[0]
    result_first = 1 if (_NUM.search(first) or "=" in first or "result" in first.lower()) else 0
    if not result_first:
        fb.append("Put the result first.")
    penalty = 1 if halluc else 0
    if any(p in memento.lower() for p in _NARRATIVE):
        penalty += 1
        fb.append("Remove process narrative.")
    if regex_token_count(memento) > 0.35 * max(1, regex_token_count(block)) and regex_token_count(memento) > 40:
        penalty += 1
        fb.append("Too long: compress to about 15% of the block.")
    score = max(0, min(10, formulas + values + meth + validation + correct + result_first - penalty))
    return Verdict(float(score), " ".join(fb) if fb else "Complete and faithful.")


class HeuristicRoles:
    """Boundary scorer, memento compressor and judge by rules, on the structured blocks (no model, no prompt).

    Args:
        config: the memento budgets (:class:`HeuristicClientConfig`).
    """

    def __init__(self, config: HeuristicClientConfig | None = None) -> None:
        self.config = config or HeuristicClientConfig()

    def budget(self, block: str, frac: float) -> int:
        """Memento tokens allowed for ``block`` at ``frac`` of its size (never under ``min_memento_tokens``)."""
        return max(self.config.min_memento_tokens, int(frac * regex_token_count(block)))

    def scores(self, units: Mapping[int, str], boundaries: Sequence[int]) -> dict[int, float]:
        """:meth:`score`, without the wait."""
        return {i: float(score_boundary(units.get(i, ""), units.get(i + 1, ""))) for i in boundaries}

    def mementos(self, blocks: Mapping[int, str]) -> dict[int, str]:
        """:meth:`compress`, without the wait."""
        return {i: extract_memento(b, self.budget(b, self.config.budget)) for i, b in sorted(blocks.items())}

    def rewritten(self, block: str, feedback: str) -> str:
        """:meth:`rewrite`, without the wait: adds what ``feedback`` quotes as missing, drops what it calls made up."""
        must = re.findall(r'Missing (?:formula|value|method|validation): "([^"]+)"', feedback)
        drop = re.findall(r'Hallucinated value: "([^"]+)"', feedback)
        return extract_memento(block, self.budget(block, self.config.rewrite_budget), must, drop)

    async def score(
        self, problem: str, units: Mapping[int, str], boundaries: Sequence[int], usage: UsageStats
    ) -> dict[int, float]:
        """Cue-word scores of ``boundaries``."""
        return self.scores(units, boundaries)

    async def compress(self, problem: str, blocks: Mapping[int, str], usage: UsageStats) -> dict[int, str]:
        """Extractive mementos of every block."""
        return self.mementos(blocks)

    async def rewrite(self, problem: str, index: int, block: str, judged: JudgedMemento, usage: UsageStats) -> str:
        """An extract of ``block`` corrected by the judge's feedback."""
        return self.rewritten(block, judged.verdict.feedback)

    async def judge(self, problem: str, block: str, memento: str, usage: UsageStats) -> Verdict:
        """The rubric computed mechanically."""
        return judge_memento(block, memento)
