"""A RoundRobinGroupChat of a writer (with a lookup tool) and a critic, each with a memento context.

Each agent keeps the task, one digest of mementos and its last blocks whole; the other agent's turns arrive as
messages from that agent and are compacted like any block. Both contexts archive into one SQLite block store.

    python examples/round_robin.py [--rounds 8] [--out DIR] [--base-url URL --model NAME]
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import AgentSeries, online_client, out_dir, parser, report  # noqa: E402
from autogen_agentchat.agents import AssistantAgent  # noqa: E402
from autogen_agentchat.conditions import MaxMessageTermination  # noqa: E402
from autogen_agentchat.teams import RoundRobinGroupChat  # noqa: E402
from autogen_core import FunctionCall  # noqa: E402
from autogen_core.models import ChatCompletionClient, CreateResult, RequestUsage  # noqa: E402
from autogen_ext.models.replay import ReplayChatCompletionClient  # noqa: E402

from autogen_ext_memento.context import MementoChatCompletionContext  # noqa: E402
from autogen_ext_memento.store import SQLiteBlockStore  # noqa: E402

NAME = "round_robin"
TOPICS = ["pricing", "latency", "accuracy", "memory", "safety", "cost", "throughput", "privacy", "tooling", "support"]
TOOL_INFO: Any = {"vision": False, "function_calling": True, "json_output": False, "family": "unknown",
                  "structured_output": False}  # fmt: skip


async def lookup(topic: str) -> str:
    """Return the research notes on a topic."""
    n = sum(map(ord, topic)) % 97
    notes = " ".join(f"{topic} measurement {i}: value {n + i * 3} units (source s{i})." for i in range(10))
    return f"Notes on {topic}: {notes}"


def scripted(rounds: int) -> tuple[ReplayChatCompletionClient, ReplayChatCompletionClient]:
    writer: list[str | CreateResult] = []
    critic: list[str | CreateResult] = []
    for r in range(rounds):
        topic = TOPICS[r % len(TOPICS)]
        writer.append(
            CreateResult(
                content=[FunctionCall(id=f"w{r}", name="lookup", arguments=json.dumps({"topic": topic}))],
                finish_reason="function_calls",
                usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
                cached=False,
            )
        )
        value = sum(map(ord, topic)) % 97
        writer.append(
            f"Section {r + 1} ({topic}). The notes give {value} units for {topic} (source s0), rising by 3 units per "
            f"measurement to {value + 27} units (s9). " + "Across the ten measurements the trend is steady and the "
            "sources agree within the stated error, so the section reports the mean and the range. " * 3
        )
        critic.append(
            f"Review of section {r + 1} ({topic}): the {value} units figure matches source s0. "
            + "Please state the measurement conditions and the error bars, and shorten the summary paragraph. " * 2
        )
    return (ReplayChatCompletionClient(writer, model_info=TOOL_INFO), ReplayChatCompletionClient(critic))


async def run(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(NAME, "RoundRobinGroupChat with memento contexts")
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args(argv)
    out = out_dir(args, NAME)
    online = online_client(args)
    writer_client: ChatCompletionClient
    critic_client: ChatCompletionClient
    if online is not None:
        writer_client = critic_client = online
    else:
        writer_client, critic_client = scripted(args.rounds)
    db = out / "blocks.sqlite"
    db.unlink(missing_ok=True)
    store = SQLiteBlockStore(str(db))
    ctx = {
        name: MementoChatCompletionContext(keep_last_n_blocks=args.keep_last, store=store, name=name)
        for name in ("writer", "critic")
    }
    writer = AssistantAgent(
        "writer",
        writer_client,
        tools=[lookup],
        model_context=ctx["writer"],
        max_tool_iterations=2,
        system_message="You write one short report section per turn; call lookup(topic) first.",
    )
    critic = AssistantAgent(
        "critic", critic_client, model_context=ctx["critic"], system_message="You review the latest section briefly."
    )
    team = RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(2 * args.rounds + 1))
    result = await team.run(task=f"Write a {args.rounds}-section evaluation report, one topic per section.")
    print(f"stop: {result.stop_reason}; blocks archived in {db}: {len(store)}")
    summary = report("RoundRobinGroupChat", [AgentSeries.from_context(n, c) for n, c in ctx.items()], out)
    store.close()
    if args.json:
        print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return asyncio.run(run(argv))


if __name__ == "__main__":
    main()
