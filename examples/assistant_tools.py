"""An AssistantAgent with a tool on a long task, with and without the memento context.

The task is the fact tracker (``autogen_ext_memento.tasks``): read a paged log through ``read(cursor)`` and report
the final value of a few keys. Every ``read`` call and its page form one block; the agent's context keeps the task,
one digest of mementos and the last blocks whole.

Offline (default) the policy is the shipped tiny memento model when it is installed
(``autogen_ext_memento.assets.tiny_model_path()``; KV-level mementos through ``MementoChatCompletionClient``),
otherwise a scripted policy that acts like a memento model (its thoughts carry the closure mementos). With
``--base-url/--model`` a real OpenAI-compatible model plays the agent and ``--writer`` picks who writes mementos.

    python examples/assistant_tools.py [--pages 5] [--out DIR] [--base-url URL --model NAME --writer llm]
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
from autogen_core.model_context import ChatCompletionContext, UnboundedChatCompletionContext  # noqa: E402
from autogen_core.models import AssistantMessage, ChatCompletionClient, CreateResult, RequestUsage  # noqa: E402
from autogen_ext.models.replay import ReplayChatCompletionClient  # noqa: E402

from autogen_ext_memento.context import (  # noqa: E402
    ClosureMementoWriter,
    LLMMementoWriter,
    MementoChatCompletionContext,
    MementoWriter,
    ObservationMaskingWriter,
    approx_tokens,
)
from autogen_ext_memento.store import InMemoryBlockStore, make_recall_tool  # noqa: E402
from autogen_ext_memento.tasks import (  # noqa: E402
    SYSTEM_PROMPT,
    Episode,
    FactTrackerConfig,
    FactTrackerEnv,
    episode_messages,
    sample_episodes,
    score_answer,
)

NAME = "assistant_tools"
TOOL_INFO: Any = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}


def scripted_policy(episode: Episode) -> ReplayChatCompletionClient:
    """A replay of the reference policy: each call reads the next page, its thought closes the previous block."""
    script: list[str | CreateResult] = []
    for m in episode_messages(episode)[2:]:
        if isinstance(m, AssistantMessage):
            script.append(
                CreateResult(
                    content=m.content,
                    thought=m.thought,
                    finish_reason="function_calls" if not isinstance(m.content, str) else "stop",
                    usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
                    cached=False,
                )
            )
    return ReplayChatCompletionClient(script, model_info=TOOL_INFO)


def tiny_model_client() -> ChatCompletionClient | None:
    """The shipped tiny memento model behind MementoChatCompletionClient, if it is installed."""
    try:
        from autogen_ext_memento import MementoChatCompletionClient, TransformersBackend
        from autogen_ext_memento.assets import tiny_model_path

        return MementoChatCompletionClient(TransformersBackend(str(tiny_model_path())), max_new_tokens=96)
    except Exception as e:  # noqa: BLE001 - the example falls back to the scripted policy
        print(f"(tiny memento model unavailable: {e}; using the scripted policy)")
        return None


async def run_once(
    episode: Episode, client: ChatCompletionClient, context: ChatCompletionContext, recall: bool, store: Any
) -> tuple[str, list[int]]:
    env = FactTrackerEnv(episode)
    tools: list[Any] = [env.tool()] + ([make_recall_tool(store)] if recall else [])
    agent = AssistantAgent(
        "tracker",
        client,
        tools=tools,
        system_message=SYSTEM_PROMPT,
        model_context=context,
        max_tool_iterations=len(episode.pages) + 4,
    )
    result = await agent.run(task=episode.goal_text)
    answer = result.messages[-1].to_text()
    sent: list[int] = []
    if isinstance(client, ReplayChatCompletionClient):
        sent = [approx_tokens(c["messages"]) for c in client.create_calls]
    return answer, sent


async def run(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    p.add_argument(
        "--pages",
        type=int,
        default=5,
        help="pages in the log (blocks in the task; the tiny model's training range is 1-5)",
    )
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--writer", choices=["model", "masking", "llm"], default=None, help="who writes mementos")
    p.add_argument(
        "--scripted", action="store_true", help="offline: use the scripted policy even if the tiny model exists"
    )
    args = p.parse_args(argv)
    out = out_dir(args, NAME)
    cfg = FactTrackerConfig().with_pages(args.pages)
    (episode,) = sample_episodes(1, args.seed, cfg)

    online = online_client(args)
    tiny = None if online is not None or args.scripted else tiny_model_client()
    mode = "online" if online is not None else ("tiny-memento-model" if tiny is not None else "scripted")
    writer_name = args.writer or ("llm" if online is not None else "model")
    writer: MementoWriter
    if writer_name == "llm":
        writer = LLMMementoWriter(online or scripted_policy(episode))
    elif writer_name == "masking":
        writer = ObservationMaskingWriter()
    else:
        writer = ClosureMementoWriter()
    store = InMemoryBlockStore()
    ctx = MementoChatCompletionContext(keep_last_n_blocks=args.keep_last, writer=writer, store=store, name="tracker")

    client: ChatCompletionClient = online or tiny or scripted_policy(episode)
    answer, sent = await run_once(episode, client, ctx, recall=online is not None, store=store)
    exact, per_key = score_answer(episode, answer)
    series = AgentSeries.from_context("tracker", ctx)
    extra: dict[str, Any] = {"mode": mode, "writer": writer_name, "answer": answer, "exact": exact, "per_key": per_key}

    if mode == "scripted":
        # The same run with AutoGen's default (unbounded) context: tokens per call without the memento context.
        _, sent_full = await run_once(episode, scripted_policy(episode), UnboundedChatCompletionContext(), False, None)
        series.live, series.full = sent, sent_full
        extra["tokens_per_call_with_memento"] = sent
        extra["tokens_per_call_without"] = sent_full
        print("\ntokens sent per model call (system prompt + context), with and without the memento context:")
        print("call  " + " ".join(f"{i + 1:>5}" for i in range(len(sent))))
        print("with  " + " ".join(f"{t:>5}" for t in sent))
        print("w/o   " + " ".join(f"{t:>5}" for t in sent_full))
    if tiny is not None:
        stats = tiny.session_stats()  # type: ignore[attr-defined]
        if stats is not None:
            series.kv = list(stats.trace)
            extra["kv"] = stats.summary()
    print(f"mode={mode} writer={writer_name} answer={answer!r} exact={exact} per_key={per_key:.2f}")
    print(f"blocks archived: {len(store)}; mementos: {sum(1 for b in store.list_blocks() if b.memento)}")
    summary = report("AssistantAgent + tools", [series], out, extra)
    if args.json:
        print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return asyncio.run(run(argv))


if __name__ == "__main__":
    main()
