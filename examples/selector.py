"""A SelectorGroupChat (planner, researcher with a search tool, analyst) where every agent and the selector itself
use a memento context.

The selector's ``model_context`` is a MementoChatCompletionContext too, so the history it flattens into its prompt
stays bounded: old turns appear as one line each in the digest.

    python examples/selector.py [--turns 12] [--out DIR] [--base-url URL --model NAME]
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
from autogen_agentchat.base import ChatAgent, Team  # noqa: E402
from autogen_agentchat.conditions import MaxMessageTermination  # noqa: E402
from autogen_agentchat.teams import SelectorGroupChat  # noqa: E402
from autogen_core import FunctionCall  # noqa: E402
from autogen_core.models import ChatCompletionClient, CreateResult, RequestUsage  # noqa: E402
from autogen_ext.models.replay import ReplayChatCompletionClient  # noqa: E402

from autogen_ext_memento.context import MementoChatCompletionContext  # noqa: E402
from autogen_ext_memento.store import InMemoryBlockStore  # noqa: E402

NAME = "selector"
ORDER = ["planner", "researcher", "analyst"]
TOOL_INFO: Any = {"vision": False, "function_calling": True, "json_output": False, "family": "unknown",
                  "structured_output": False}  # fmt: skip
FILLER = " The evidence is consistent across the three reports and the uncertainty is within five percent."


async def search(query: str) -> str:
    """Search the document collection and return the best passages."""
    k = sum(map(ord, query)) % 50
    return " ".join(f"[doc{k + i}] {query}: passage {i} reports {k * 2 + i} cases in region R{i}." for i in range(8))


def scripted(turns: int) -> dict[str, ReplayChatCompletionClient]:
    speakers = [ORDER[i % 3] for i in range(turns)]
    scripts: dict[str, list[str | CreateResult]] = {n: [] for n in ORDER}
    for i, who in enumerate(speakers):
        step = i // 3 + 1
        if who == "planner":
            scripts[who].append(
                f"Plan step {step}: research question Q{step} about region R{step}, then analyse." + FILLER
            )
        elif who == "researcher":
            scripts[who].append(
                CreateResult(
                    content=[FunctionCall(id=f"s{i}", name="search", arguments=json.dumps({"query": f"Q{step}"}))],
                    finish_reason="function_calls",
                    usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
                    cached=False,
                )
            )
            scripts[who].append(f"Findings for Q{step}: the passages report cases across eight regions." + FILLER * 2)
        else:
            scripts[who].append(
                f"Analysis of Q{step}: cases grow with the region index; confidence is high." + FILLER * 2
            )
    clients = {n: ReplayChatCompletionClient(s, model_info=TOOL_INFO) for n, s in scripts.items()}
    # The selector answers with the next speaker's name (its first turn is skipped: the planner starts).
    clients["selector"] = ReplayChatCompletionClient(speakers[1:] + ["planner"])
    return clients


async def run(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(NAME, "SelectorGroupChat with memento contexts")
    p.add_argument("--turns", type=int, default=12)
    args = p.parse_args(argv)
    out = out_dir(args, NAME)
    online = online_client(args)
    clients: dict[str, ChatCompletionClient]
    if online is not None:
        clients = {n: online for n in [*ORDER, "selector"]}
    else:
        clients = dict(scripted(args.turns))
    store = InMemoryBlockStore()
    ctx = {
        n: MementoChatCompletionContext(keep_last_n_blocks=args.keep_last, store=store, name=n)
        for n in [*ORDER, "selector"]
    }
    agents: list[ChatAgent | Team] = [
        AssistantAgent(
            "planner", clients["planner"], model_context=ctx["planner"], description="Plans the next research step."
        ),
        AssistantAgent(
            "researcher",
            clients["researcher"],
            tools=[search],
            max_tool_iterations=2,
            model_context=ctx["researcher"],
            description="Searches documents for the current question.",
        ),
        AssistantAgent(
            "analyst", clients["analyst"], model_context=ctx["analyst"], description="Analyses the findings."
        ),
    ]
    team = SelectorGroupChat(
        agents,
        model_client=clients["selector"],
        model_context=ctx["selector"],
        selector_func=lambda msgs: "planner" if len(msgs) == 1 else None,
        termination_condition=MaxMessageTermination(args.turns + 1),
    )
    result = await team.run(task="Investigate the case counts by region and report the trend.")
    print(f"stop: {result.stop_reason}; blocks archived: {len(store)}")
    summary = report("SelectorGroupChat", [AgentSeries.from_context(n, c) for n, c in ctx.items()], out)
    if args.json:
        print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return asyncio.run(run(argv))


if __name__ == "__main__":
    main()
