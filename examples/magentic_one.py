"""A Magentic-One team (orchestrator, coder, terminal) with sawtooth context through a wrapping model client.

The Magentic-One orchestrator and ``MagenticOneCoderAgent`` take no ``model_context``; wrapping their model clients
in ``MementoContextClient`` compacts every request they send. The orchestrator clears every participant and its
own thread at each re-plan; the mementos written before survive in a ``MementoMemory`` that the wrapping clients
inject into every later request. The terminal really runs the coder's Python blocks (in the output directory).

    python examples/magentic_one.py [--out DIR] [--base-url URL --model NAME]
"""

from __future__ import annotations

import asyncio
import json
import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import AgentSeries, online_client, out_dir, parser, report  # noqa: E402
from autogen_agentchat.agents import CodeExecutorAgent  # noqa: E402
from autogen_agentchat.teams import MagenticOneGroupChat  # noqa: E402
from autogen_core.models import ChatCompletionClient  # noqa: E402
from autogen_ext.agents.magentic_one import MagenticOneCoderAgent  # noqa: E402
from autogen_ext.code_executors.local import LocalCommandLineCodeExecutor  # noqa: E402
from autogen_ext.models.replay import ReplayChatCompletionClient  # noqa: E402

from autogen_ext_memento.memory import MementoMemory  # noqa: E402
from autogen_ext_memento.store import InMemoryBlockStore  # noqa: E402
from autogen_ext_memento.wrapping import MementoContextClient  # noqa: E402

NAME = "magentic_one"
TASK = "Compute the sum of the squares of the primes below 1000 and report it."


def _ledger(satisfied: bool, progress: bool, speaker: str, instruction: str) -> str:
    def entry(answer: Any) -> dict[str, Any]:
        return {"reason": "scripted for the offline example", "answer": answer}

    return json.dumps(
        {
            "is_request_satisfied": entry(satisfied),
            "is_in_loop": entry(False),
            "is_progress_being_made": entry(progress),
            "next_speaker": entry(speaker),
            "instruction_or_question": entry(instruction),
        }
    )


def _code(body: str, note: str) -> str:
    return f"{note}\n\n```python\n{body}\n```\n\nThe terminal should run this block and report the output."


CODE_V1 = """primes = [n for n in range(2, 1000) if all(n % d for d in range(2, n))]
for start in range(0, len(primes), 12):
    print("primes", primes[start : start + 12])
print("count", len(primes))
print("sum of squares", sum(p * p for p in primes[:-1]))  # bug: drops the last prime"""
CODE_V2 = """primes = [n for n in range(2, 1000) if all(n % d for d in range(2, int(n ** 0.5) + 1))]
for start in range(0, len(primes), 12):
    print("squares", [p * p for p in primes[start : start + 12]])
print("count", len(primes), "last", primes[-1])
print("sum of squares", sum(p * p for p in primes))"""
CODE_V3 = """import math
sieve = [True] * 1000
sieve[0] = sieve[1] = False
for i in range(2, int(math.isqrt(999)) + 1):
    if sieve[i]:
        sieve[i * i :: i] = [False] * len(sieve[i * i :: i])
primes = [i for i, p in enumerate(sieve) if p]
print("count", len(primes), "sum of squares", sum(p * p for p in primes))"""


def scripted() -> tuple[ReplayChatCompletionClient, ReplayChatCompletionClient]:
    detail = " Keep the output short and print the intermediate counts so the result can be checked."
    orchestrator = ReplayChatCompletionClient(
        [
            "Facts: primes below 1000 are needed; the answer is one integer.",
            "Plan: 1. coder writes a script. 2. terminal runs it. 3. check the count (168 primes).",
            _ledger(False, True, "coder", "Write a Python script that computes the sum." + detail),
            _ledger(False, True, "terminal", "Run the coder's script." + detail),
            _ledger(False, True, "coder", "The result misses the last prime; fix the script." + detail),
            _ledger(False, True, "terminal", "Run the fixed script." + detail),
            _ledger(False, True, "coder", "Double-check the count of primes with a second method." + detail),
            _ledger(False, True, "terminal", "Run the check." + detail),
            _ledger(False, False, "coder", "Progress stalled; re-plan." + detail),
            "Facts (updated): 168 primes below 1000; trial division works but is slow; the last prime is 997.",
            "Plan (updated): 1. coder writes a sieve. 2. terminal runs it. 3. report the sum.",
            _ledger(False, True, "coder", "Write a sieve-based script." + detail),
            _ledger(False, True, "terminal", "Run the sieve script." + detail),
            _ledger(True, True, "coder", "Done."),
            "The sum of the squares of the 168 primes below 1000 is 49345379.",
        ]
    )
    coder = ReplayChatCompletionClient(
        [
            _code(CODE_V1, "Here is a first version using trial division."),
            _code(CODE_V2, "Fixed: the last prime is now included and trial division stops at the square root."),
            _code(CODE_V1.replace("[:-1]", ""), "A check with plain trial division over every divisor."),
            _code(CODE_V3, "A sieve of Eratosthenes version, after the re-plan."),
        ]
    )
    return orchestrator, coder


async def run(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(NAME, "Magentic-One with memento wrapping clients")
    args = p.parse_args(argv)
    out = out_dir(args, NAME)
    online = online_client(args)
    inner_orch: ChatCompletionClient
    inner_coder: ChatCompletionClient
    if online is not None:
        inner_orch = inner_coder = online
    else:
        inner_orch, inner_coder = scripted()
    memory = MementoMemory(max_tokens=250)
    store = InMemoryBlockStore()
    orch_client = MementoContextClient(
        inner_orch, keep_last_n_blocks=max(2, args.keep_last), memory=memory, store=store, name="orchestrator"
    )
    # The coder gets no memory: after a re-plan the orchestrator's new ledger tells it what it needs.
    coder_client = MementoContextClient(inner_coder, keep_last_n_blocks=args.keep_last, store=store, name="coder")
    work = out / "work"
    work.mkdir(exist_ok=True)
    with warnings.catch_warnings():
        # The local-executor and approval warnings: offline, the terminal runs only the scripted blocks above.
        warnings.simplefilter("ignore", UserWarning)
        executor = LocalCommandLineCodeExecutor(work_dir=work, timeout=30)
        terminal = CodeExecutorAgent("terminal", executor)
    coder = MagenticOneCoderAgent("coder", model_client=coder_client)
    team = MagenticOneGroupChat([coder, terminal], model_client=orch_client, max_stalls=1, max_turns=30)
    result = await team.run(task=TASK)
    answer = result.messages[-1].to_text()
    outputs = [m.to_text() for m in result.messages if m.source == "terminal"]
    print(f"answer: {answer}")
    print(f"terminal outputs: {[o.splitlines()[-1] if o else '' for o in outputs]}")
    print(f"team mementos kept across the re-plan: {len(memory)}; blocks archived: {len(store)}")
    series = [AgentSeries.from_client("orchestrator", orch_client), AgentSeries.from_client("coder", coder_client)]
    summary = report(
        "Magentic-One", series, out, {"answer": answer, "terminal_outputs": outputs, "team_mementos": len(memory)}
    )
    if args.json:
        print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return asyncio.run(run(argv))


if __name__ == "__main__":
    main()
