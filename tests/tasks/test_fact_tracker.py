"""The fact-tracker task: seeded episodes, reference mementos and answers, the real chat format, the tool."""

from __future__ import annotations

import json

import pytest
from autogen_core import CancellationToken
from autogen_core.models import AssistantMessage, FunctionExecutionResultMessage

from autogen_ext_memento.chat_format import CLOSURE_PREFIX, render
from autogen_ext_memento.grammar import BLOCK_START, SUMMARY_END
from autogen_ext_memento.tasks import (
    END_CURSOR,
    HONEST_TASK,
    UNKNOWN,
    Episode,
    FactTrackerConfig,
    FactTrackerEnv,
    Page,
    episode_messages,
    memento_of,
    parse_answer,
    sample_episodes,
    score_answer,
    tool_schema_tool,
)


def _hand_episode() -> Episode:
    pages = (
        Page(0, (("alpha", 3), ("kilo", 9), ("bravo", 5), ("alpha", 4)), 17),
        Page(17, (("lima", 1), ("bravo", 8)), 42),
        Page(42, (("kilo", 2),), None),
    )
    return Episode(("alpha", "bravo", "echo"), pages)


def test_reference_mementos_and_answer() -> None:
    ep = _hand_episode()
    assert ep.memento(0) == "next 17 alpha 4 bravo 5 echo ?"
    assert ep.memento(1) == "next 42 alpha 4 bravo 8 echo ?"
    assert ep.memento(2) == f"next {END_CURSOR} alpha 4 bravo 8 echo {UNKNOWN}"
    assert ep.answer == "answer: alpha 4 bravo 8 echo ?"
    assert score_answer(ep, "answer: alpha 4 bravo 8 echo ?") == (True, 1.0)
    exact, per_key = score_answer(ep, "answer: alpha 4 bravo 5 echo ?")
    assert not exact and per_key == pytest.approx(2 / 3)
    assert parse_answer("answer: alpha 4 bravo 8") == {"alpha": "4", "bravo": "8"}


def test_episodes_are_seeded_and_shaped() -> None:
    cfg = FactTrackerConfig(
        min_pages=3, max_pages=6, facts_per_page=8, min_facts_per_page=None, goal=("alpha", "bravo")
    )
    a = sample_episodes(20, seed=7, config=cfg)
    b = sample_episodes(20, seed=7, config=cfg)
    assert a == b
    assert a != sample_episodes(20, seed=8, config=cfg)
    for ep in a:
        assert 3 <= len(ep.pages) <= 6 and len(ep.goal) == 2
        assert ep.pages[0].cursor == 0 and ep.pages[-1].next_cursor is None
        cursors = [p.cursor for p in ep.pages]
        assert len(set(cursors)) == len(cursors)
        assert all(p.next_cursor == q.cursor for p, q in zip(ep.pages, ep.pages[1:], strict=False))
        assert all(len(p.facts) == 8 for p in ep.pages)
    with pytest.raises(ValueError):
        FactTrackerConfig(min_pages=5, max_pages=2)
    assert {ep.goal for ep in a} == {("alpha", "bravo")}  # a fixed goal when asked for
    random_goal = sample_episodes(20, seed=1, config=FactTrackerConfig(goal_keys=3, min_goal_keys=None))
    assert len({ep.goal for ep in random_goal}) > 5 and all(len(ep.goal) == 3 for ep in random_goal)
    honest = sample_episodes(50, seed=2, config=HONEST_TASK)  # 2-3 random goal keys per episode
    assert {len(ep.goal) for ep in honest} == {2, 3} and len({ep.goal for ep in honest}) > 40
    assert sample_episodes(5, seed=2) == sample_episodes(5, seed=2, config=HONEST_TASK)  # the default: honest
    assert FactTrackerConfig(goal_keys=1).min_goal_keys == 1  # a smaller maximum narrows the default range
    assert FactTrackerConfig(facts_per_page=3).min_facts_per_page == 3
    with pytest.raises(ValueError):
        FactTrackerConfig(min_goal_keys=4, goal_keys=3)
    with pytest.raises(ValueError):
        FactTrackerConfig(goal=("zulu",))
    varied = sample_episodes(30, seed=1, config=FactTrackerConfig(min_facts_per_page=4, facts_per_page=8))
    counts = {len(p.facts) for ep in varied for p in ep.pages}
    assert counts <= set(range(4, 9)) and len(counts) >= 3


def test_messages_use_the_closure_protocol() -> None:
    ep = _hand_episode()
    msgs = episode_messages(ep)
    calls = [m for m in msgs if isinstance(m, AssistantMessage) and not isinstance(m.content, str)]
    results = [m for m in msgs if isinstance(m, FunctionExecutionResultMessage)]
    assert len(calls) == len(results) == 3
    assert [json.loads(c.content[0].arguments)["cursor"] for c in calls] == [0, 17, 42]  # type: ignore[index,union-attr]
    assert calls[0].thought is None
    assert calls[1].thought == f"{CLOSURE_PREFIX}{ep.memento(0)}{SUMMARY_END}"
    final = msgs[-1]
    assert isinstance(final, AssistantMessage) and final.content == ep.answer
    assert memento_of(final.thought or "") == ep.memento(2)
    r = render(msgs, [tool_schema_tool()])
    assert r.pending_closure is None
    text = r.text
    # every memento follows its own observation, and every tool call opens a block
    assert text.count(BLOCK_START) == 3 and text.count(CLOSURE_PREFIX) == 3
    assert text.index("- kilo 2") < text.index(ep.memento(2)) < text.index(ep.answer)


@pytest.mark.asyncio
async def test_function_tool_reads_pages() -> None:
    ep = _hand_episode()
    env = FactTrackerEnv(ep)
    tool = env.tool()
    assert tool.schema["name"] == "read"
    assert tool.schema == tool_schema_tool().schema
    out = await tool.run_json({"cursor": 17}, CancellationToken())
    assert tool.return_value_as_string(out) == "- lima 1\n- bravo 8\nnext 42"
    assert env.read(5).startswith("error")
    assert env.calls == [17, 5]
