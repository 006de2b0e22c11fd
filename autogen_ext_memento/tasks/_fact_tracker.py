"""The fact tracker: a procedural, seeded long-horizon agent task in the real agent chat format.

The agent must report the final value of a few *goal keys* after reading a paged log through a ``read(cursor)``
tool. Every page holds ``- key value`` lines (mostly distractors: facts about other keys) and the cursor of the next
page (``next none`` on the last page). Cursors are random page ids, so nothing depends on counting and the task
extends to any length. After each observation the model writes a *state memento* — the next cursor
and the current value of every goal key (``?`` while unseen) — so, once the block is evicted, state is carried
forward only through mementos. The final answer needs facts that live only in evicted blocks.

An episode is a list of AutoGen messages exactly as :class:`~autogen_agentchat.agents.AssistantAgent` records them
through :class:`~autogen_ext_memento.MementoChatCompletionClient`::

    SystemMessage(SYSTEM_PROMPT)
    UserMessage(goal)
    AssistantMessage([FunctionCall(read, {"cursor": 0})])
    FunctionExecutionResultMessage([page 1])
    AssistantMessage([FunctionCall(read, {"cursor": 17})],
                     thought="<|block_end|><|summary_start|>next 17 alpha 7 bravo ?<|summary_end|>")
    FunctionExecutionResultMessage([page 2])
    ...
    AssistantMessage("answer: alpha 4 bravo 9",
                     thought="<|block_end|><|summary_start|>next none alpha 4 bravo 9<|summary_end|>")
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import FunctionTool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..chat_format import build_closure, memento_in

KEYS: tuple[str, ...] = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
    "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
    "yankee",
)  # fmt: skip
UNKNOWN = "?"
END_CURSOR = "none"
TOOL_NAME = "read"
TOOL_DESCRIPTION = "Read the log page at a cursor."
SYSTEM_PROMPT = "You track facts in a paged log."
AGENT_NAME = "tracker"


class FactTrackerConfig(BaseModel):
    """Shape of fact-tracker episodes.

    Args:
        goal: ``None`` (the default) draws the goal keys per episode, so a model must copy them from the goal
            message; a tuple fixes them for every episode (a shortcut a model can learn instead of reading the goal).
        goal_keys: how many keys the agent must track when ``goal`` is ``None`` (the most, with
            ``min_goal_keys``: each episode draws its count uniformly from ``min_goal_keys .. goal_keys``).
        min_goal_keys: the fewest goal keys per episode (``None``: exactly ``goal_keys``).
        facts_per_page: ``key value`` lines per page (the observation's bulk); with ``min_facts_per_page``, the
            most lines, each page drawing its count uniformly from ``min_facts_per_page .. facts_per_page``
            (``None``: exactly ``facts_per_page``).
        goal_fact_prob: probability that a fact is about a goal key (the rest are distractors).
        min_pages / max_pages: page count, drawn uniformly per episode.
        n_values: values are the integers ``0 .. n_values-1``.
        n_keys: size of the key pool (a prefix of :data:`KEYS`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    goal: tuple[str, ...] | None = None
    goal_keys: int = Field(default=3, ge=1)
    min_goal_keys: int | None = Field(default=2, ge=1)
    facts_per_page: int = Field(default=9, ge=1)
    min_facts_per_page: int | None = Field(default=6, ge=1)
    goal_fact_prob: float = Field(default=0.25, ge=0.0, le=1.0)
    min_pages: int = Field(default=1, ge=1)
    max_pages: int = Field(default=5, ge=1)
    n_values: int = Field(default=100, ge=2, le=100)
    n_keys: int = Field(default=16, ge=2, le=len(KEYS))

    @model_validator(mode="before")
    @classmethod
    def _clamp_default_minimums(cls, data: Any) -> Any:
        # A smaller maximum alone (``facts_per_page=3``) narrows the default range instead of failing on it.
        if isinstance(data, dict):
            for most, least in (("facts_per_page", "min_facts_per_page"), ("goal_keys", "min_goal_keys")):
                top = data.get(most)
                default = cls.model_fields[least].default
                if least not in data and isinstance(top, int) and default is not None and top < default:
                    data = {**data, least: top}
        return data

    @model_validator(mode="after")
    def _check(self) -> FactTrackerConfig:
        if self.min_pages > self.max_pages:
            raise ValueError(f"min_pages {self.min_pages} > max_pages {self.max_pages}")
        if self.min_facts_per_page is not None and self.min_facts_per_page > self.facts_per_page:
            raise ValueError(f"min_facts_per_page {self.min_facts_per_page} > facts_per_page {self.facts_per_page}")
        if self.goal is not None and any(k not in KEYS[: self.n_keys] for k in self.goal):
            raise ValueError(f"goal keys {self.goal} must be among the first n_keys={self.n_keys} keys")
        if self.min_goal_keys is not None and self.min_goal_keys > self.goal_keys:
            raise ValueError(f"min_goal_keys {self.min_goal_keys} > goal_keys {self.goal_keys}")
        if self.goal_keys > self.n_keys:
            raise ValueError(f"goal_keys {self.goal_keys} > n_keys {self.n_keys}")
        return self

    def with_pages(self, pages: int) -> FactTrackerConfig:
        """The same task with exactly ``pages`` pages per episode."""
        return self.model_copy(update={"min_pages": pages, "max_pages": pages})


HONEST_TASK = FactTrackerConfig()
"""The default task, one a model cannot shortcut: 2-3 random goal keys of 16 per episode, 6-9 facts a page (a block
holds >= 5x the tokens of its memento), 1-5 pages; the twins were trained on it and ``autogen-memento eval`` measures
on it."""


@dataclass(frozen=True)
class Page:
    """One page of the log: its cursor, its facts in order and the next cursor (``None`` on the last page)."""

    cursor: int
    facts: tuple[tuple[str, int], ...]
    next_cursor: int | None

    @property
    def text(self) -> str:
        lines = [f"- {k} {v}" for k, v in self.facts]
        lines.append(f"next {END_CURSOR if self.next_cursor is None else self.next_cursor}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Episode:
    """One seeded episode: goal keys, pages, and the reference mementos and answer."""

    goal: tuple[str, ...]
    pages: tuple[Page, ...]
    seed: int = 0
    states: tuple[tuple[str, ...], ...] = field(default=(), repr=False)

    @property
    def goal_text(self) -> str:
        return (
            f"Track {' '.join(self.goal)}. Call {TOOL_NAME} with cursor 0, then with each next cursor until next is "
            f"{END_CURSOR}. Then answer with the final value of each key."
        )

    def state_after(self, page_index: int) -> dict[str, str]:
        """Value of every goal key after reading pages ``0 .. page_index``."""
        state = dict.fromkeys(self.goal, UNKNOWN)
        for page in self.pages[: page_index + 1]:
            for k, v in page.facts:
                if k in state:
                    state[k] = str(v)
        return state

    def memento(self, page_index: int) -> str:
        """The reference memento written after page ``page_index``."""
        nxt = self.pages[page_index].next_cursor
        state = self.state_after(page_index)
        return f"next {END_CURSOR if nxt is None else nxt} " + " ".join(f"{k} {state[k]}" for k in self.goal)

    @property
    def answer(self) -> str:
        """The reference final answer."""
        state = self.state_after(len(self.pages) - 1)
        return "answer: " + " ".join(f"{k} {state[k]}" for k in self.goal)

    @property
    def answer_values(self) -> dict[str, str]:
        return self.state_after(len(self.pages) - 1)


def sample_episode(rng: random.Random, config: FactTrackerConfig | None = None, seed: int = 0) -> Episode:
    """Draw one episode from ``rng``."""
    cfg = config or FactTrackerConfig()
    pool = list(KEYS[: cfg.n_keys])
    if cfg.goal is not None:
        goal = tuple(cfg.goal)
    else:
        n_goal = cfg.goal_keys if cfg.min_goal_keys is None else rng.randint(cfg.min_goal_keys, cfg.goal_keys)
        goal = tuple(rng.sample(pool, n_goal))
    others = [k for k in pool if k not in goal]
    n_pages = rng.randint(cfg.min_pages, cfg.max_pages)
    # Cursors are distinct random page ids (1..99), so the task needs no counting and generalises to any length.
    cursors = [0] + rng.sample(range(1, 100), min(n_pages - 1, 99))
    while len(cursors) < n_pages:  # more than 100 pages: allow repeats beyond the pool
        cursors.append(rng.randint(1, 99))
    pages = []
    for i in range(n_pages):
        facts = []
        n_facts = (
            cfg.facts_per_page
            if cfg.min_facts_per_page is None
            else rng.randint(cfg.min_facts_per_page, cfg.facts_per_page)
        )
        for _ in range(n_facts):
            key = rng.choice(goal) if rng.random() < cfg.goal_fact_prob else rng.choice(others)
            facts.append((key, rng.randrange(cfg.n_values)))
        nxt = cursors[i + 1] if i + 1 < n_pages else None
        pages.append(Page(cursors[i], tuple(facts), nxt))
    return Episode(goal, tuple(pages), seed)


def sample_episodes(n: int, seed: int, config: FactTrackerConfig | None = None) -> list[Episode]:
    """``n`` episodes drawn from one seeded generator (the same ``seed`` always gives the same episodes)."""
    rng = random.Random(seed)
    return [sample_episode(rng, config, seed) for _ in range(n)]


class FactTrackerEnv:
    """The tool environment of one episode: ``read(cursor)`` returns the page at that cursor."""

    def __init__(self, episode: Episode) -> None:
        self.episode = episode
        self._by_cursor = {p.cursor: p for p in episode.pages}
        self.calls: list[int] = []

    def read(self, cursor: int) -> str:
        """Read the log page at a cursor: ``- key value`` lines, then ``next <cursor>``."""
        self.calls.append(cursor)
        page = self._by_cursor.get(int(cursor))
        if page is None:
            return f"error: no page at cursor {cursor}"
        return page.text

    def tool(self) -> FunctionTool:
        """A real AutoGen :class:`FunctionTool` bound to this environment (schema identical for every episode)."""

        def read(cursor: int) -> str:
            return self.read(cursor)

        return FunctionTool(read, description=TOOL_DESCRIPTION, name=TOOL_NAME)


def tool_schema_tool() -> FunctionTool:
    """A tool with the task's schema (for rendering training data; it is never called)."""
    return FactTrackerEnv(Episode((), ())).tool()


closure = build_closure
"""The closure text a model writes after an observation, as it appears at the start of the next thought."""


def episode_messages(episode: Episode, *, upto_page: int | None = None, with_answer: bool = True) -> list[LLMMessage]:
    """The episode as the AutoGen messages an agent driving it would record (see the module docstring)."""
    msgs: list[LLMMessage] = [
        SystemMessage(content=SYSTEM_PROMPT),
        UserMessage(content=episode.goal_text, source="user"),
    ]
    n = len(episode.pages) if upto_page is None else upto_page
    for i, page in enumerate(episode.pages[:n]):
        thought = closure(episode.memento(i - 1)) if i > 0 else None
        call = FunctionCall(id=f"call_{i}", name=TOOL_NAME, arguments=json.dumps({"cursor": page.cursor}))
        msgs.append(AssistantMessage(content=[call], thought=thought, source=AGENT_NAME))
        msgs.append(
            FunctionExecutionResultMessage(
                content=[FunctionExecutionResult(content=page.text, name=TOOL_NAME, call_id=call.id, is_error=False)]
            )
        )
    if with_answer and n == len(episode.pages):
        msgs.append(
            AssistantMessage(content=episode.answer, thought=closure(episode.memento(n - 1)), source=AGENT_NAME)
        )
    return msgs


_PAIR_RE = re.compile(r"([a-z]+)\s+(\S+)")


def parse_answer(text: str) -> dict[str, str]:
    """Read ``key value`` pairs from an answer (later pairs win)."""
    return {k: v for k, v in _PAIR_RE.findall(text.strip())}


def score_answer(episode: Episode, text: str) -> tuple[bool, float]:
    """``(exact, per_key)``: every goal key right (and nothing else), and the fraction of goal keys right."""
    got = parse_answer(text)
    ref = episode.answer_values
    right = sum(got.get(k) == v for k, v in ref.items())
    exact = right == len(ref) and text.strip() == episode.answer
    return exact, right / max(1, len(ref))


memento_of = memento_in
"""The memento inside a closure (``<|block_end|><|summary_start|>…<|summary_end|>``)."""


def task_words() -> tuple[str, ...]:
    """The task's words as a tiny model's whole tokens: keys, values/cursors and ``?``/``none`` with their leading
    space (as they follow another word), ``next`` and ``answer`` as they start a line or a memento."""
    spaced = (*KEYS, *(str(i) for i in range(100)), UNKNOWN, END_CURSOR)
    return (*(" " + w for w in spaced), "next", "answer")


def corpus(episodes: Sequence[Episode]) -> list[str]:
    """Rendered text of episodes (to train a tokenizer on the exact strings the model will see)."""
    from ..chat_format import render

    tool = tool_schema_tool()
    return [render(episode_messages(e), [tool]).text for e in episodes]
