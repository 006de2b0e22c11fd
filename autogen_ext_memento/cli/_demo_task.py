"""Scenarios for ``autogen-memento demo``: the shipped trained model on its task, or a scripted fallback."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autogen_core.tools import FunctionTool

from ..chat_format import IM_END, render_tool_call
from ..grammar import BLOCK_START, SUMMARY_END


@dataclass
class Scenario:
    """What the demo runs: a model and tokenizer, the agent's tools and task, and how to judge the answer."""

    model: Any
    tokenizer: Any
    model_name: str
    policy: str
    system_message: str
    task: str
    tools: list[Any]  # AssistantAgent takes a list of tools or callables
    expected: str | None
    max_new_tokens: int = 256
    logits_processor: Callable[[str, list[int], Any], Any] | None = None
    calls: list[str] = field(default_factory=list)

    def turns(self) -> int:
        return len(self.calls)


def make_scenario(model_dir: str | None, *, blocks: int, seed: int, policy: str = "auto") -> Scenario:
    """Pick the demo's scenario.

    ``trained``: a model trained by the recipe (``model_dir``, default the shipped tiny model) drives the agent on a
    held-out fact-tracker episode. ``scripted``: the tokens are forced from a script (on ``model_dir`` or a random
    tiny model) so the KV mechanics can be shown without a trained model. ``auto``: trained when a model is
    available, else scripted.
    """
    if policy not in ("auto", "trained", "scripted"):
        raise ValueError(f"unknown policy {policy!r}")
    if policy != "scripted":
        trained = _trained_scenario(model_dir, blocks=blocks, seed=seed)
        if trained is not None:
            return trained
        if policy == "trained":
            raise FileNotFoundError("no trained memento model: pass --model DIR or install the shipped tiny model")
    return _scripted_scenario(model_dir, blocks=blocks, seed=seed)


def _trained_scenario(model_dir: str | None, *, blocks: int, seed: int) -> Scenario | None:
    """The shipped (or given) trained memento model on a held-out fact-tracker episode of ``blocks`` pages."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..assets import tiny_model_path
    from ..tasks import SYSTEM_PROMPT, FactTrackerConfig, FactTrackerEnv, sample_episodes

    if model_dir is None:
        try:
            model_dir = str(tiny_model_path())
        except FileNotFoundError:
            return None
    # Held-out episodes: the training recipe draws its episodes from other seeds.
    episode = sample_episodes(1, seed=10_000 + seed, config=FactTrackerConfig().with_pages(blocks))[0]
    env = FactTrackerEnv(episode)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return Scenario(
        model=model,
        tokenizer=tok,
        model_name=model_dir,
        policy="trained tiny memento model (fact tracker)",
        system_message=SYSTEM_PROMPT,
        task=episode.goal_text,
        tools=[env.tool()],
        expected=episode.answer,
        max_new_tokens=64,
        calls=env.calls,  # type: ignore[arg-type]
    )


def _scripted_scenario(model_dir: str | None, *, blocks: int, seed: int) -> Scenario:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .._tiny import build_tiny_qwen3, build_tokenizer
    from ..testing import ScriptedCompletions

    rnd = random.Random(seed)
    items = ["bolts", "nuts", "gears", "valves"]
    pages: list[str] = []
    totals = dict.fromkeys(items, 0)
    for page in range(1, blocks + 1):
        item = rnd.choice(items)
        n = rnd.randint(1, 9)
        totals[item] += n
        filler = " ".join(rnd.choice(["shelf", "crate", "checked", "ok", "aisle", "dock", "sealed"]) for _ in range(60))
        pages.append(f"page {page}: received {n} {item}. notes: {filler}")
    calls: list[str] = []

    def read_page(page: int) -> str:
        """Read one page of the warehouse log."""
        calls.append(f"read_page({page})")
        return pages[page - 1] if 1 <= page <= len(pages) else "no such page"

    script: list[str] = []
    running = dict.fromkeys(items, 0)
    for page in range(1, blocks + 1):
        call = render_tool_call("read_page", json.dumps({"page": page}))
        script.append(f"{BLOCK_START}read page {page}{call}{IM_END}")
        n_text, item = pages[page - 1].split(": received ")[1].split(".")[0].split(" ")
        running[item] += int(n_text)
        script.append(" ".join(f"{k}={v}" for k, v in running.items()) + SUMMARY_END)
    answer = ", ".join(f"{k}={v}" for k, v in totals.items())
    script.append(f"totals: {answer}{IM_END}")
    if model_dir:
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        name = model_dir
    else:
        tok = build_tokenizer()
        model = build_tiny_qwen3(len(tok))
        name = "random tiny Qwen3 (built locally)"
    return Scenario(
        model=model,
        tokenizer=tok,
        model_name=name,
        policy="scripted (no trained memento model found: the tokens are forced, the KV work is real)",
        system_message="You audit a warehouse log. Read every page with the tool, keep running totals.",
        task=f"The log has {blocks} pages. Report the total received per item.",
        tools=[FunctionTool(read_page, description="Read one page of the warehouse log.")],
        expected=f"totals: {answer}",
        logits_processor=ScriptedCompletions(tok, script),
        calls=calls,
    )
