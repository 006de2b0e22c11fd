"""The bundled samples: reasoning traces, and how the bundled AgentChat run was recorded (replay model, real tools).

``data/reasoning_traces.jsonl`` holds a dozen short math, code and science traces written for this package.
``data/agentchat_run.json`` is the output of :func:`record_sample_agentchat_run`: an ``AssistantAgent`` driven
by a ``ReplayChatCompletionClient`` calls real ``FunctionTool`` s (a safe calculator and a unit converter), so the
tool results in the file were computed by the tools, not written by hand. Regenerate it with
``python -m autogen_ext_memento.pipeline._samples``.
"""

from __future__ import annotations

import ast
import asyncio
import json
import operator
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ._config import ReasoningSample
from ._io import read_json_records

SAMPLE_REASONING = "reasoning_traces.jsonl"
SAMPLE_AGENTCHAT = "agentchat_run.json"


def sample_path(name: str) -> Path:
    """Filesystem path of a bundled sample file."""
    return Path(str(resources.files("autogen_ext_memento.pipeline").joinpath(f"data/{name}")))


def load_reasoning_inputs(path: str | Path) -> list[ReasoningSample]:
    """Reasoning samples from a JSONL file (or a JSON list); ids default to ``<stem>-<line>``."""
    p = Path(path)
    recs = read_json_records(p)
    return [ReasoningSample.from_record(r, f"{p.stem}-{n}") for n, r in enumerate(recs)]


_OPS: Mapping[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_eval(node.left), _eval(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_eval(node.operand)))
    raise ValueError(f"unsupported expression element: {ast.dump(node)[:40]}")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression (+, -, *, /, **, parentheses) and return the value."""
    value = _eval(ast.parse(expression, mode="eval"))
    return f"{value:.6g}"


_TO_SI = {"km": 1000.0, "m": 1.0, "mi": 1609.344, "ft": 0.3048, "h": 3600.0, "min": 60.0, "s": 1.0}


def unit_convert(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a length (km, m, mi, ft) or a duration (h, min, s) between units."""
    if from_unit not in _TO_SI or to_unit not in _TO_SI:
        raise ValueError(f"unknown unit; known: {', '.join(_TO_SI)}")
    return f"{value} {from_unit} = {value * _TO_SI[from_unit] / _TO_SI[to_unit]:.6g} {to_unit}"


SYSTEM_MESSAGE = "You are a careful assistant. Use the tools for every conversion and computation."
TASK = (
    "A cyclist rides 42 km in 1.75 h, then 18 mi in 70 min. What is the average speed over the whole trip in km/h?"
    " Verify the result."
)


async def record_sample_agentchat_run() -> dict[str, Any]:
    """Run the bundled AgentChat scenario (replay model, real tools) and return the record stored in the data file."""
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core import FunctionCall
    from autogen_core.models import CreateResult, RequestUsage
    from autogen_core.tools import FunctionTool
    from autogen_ext.models.replay import ReplayChatCompletionClient

    def call(name: str, args: dict[str, Any], cid: str) -> FunctionCall:
        return FunctionCall(id=cid, name=name, arguments=json.dumps(args))

    def turn(calls: list[FunctionCall], thought: str) -> CreateResult:
        return CreateResult(
            finish_reason="function_calls",
            content=calls,
            usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
            cached=False,
            thought=thought,
        )

    script: list[str | CreateResult] = [
        turn(
            [
                call("unit_convert", {"value": 18, "from_unit": "mi", "to_unit": "km"}, "call_1"),
                call("unit_convert", {"value": 70, "from_unit": "min", "to_unit": "h"}, "call_2"),
            ],
            "The second leg is in miles and minutes; convert both to km and h first.",
        ),
        turn(
            [call("calculator", {"expression": "(42 + 28.9682) / (1.75 + 1.16667)"}, "call_3")],
            "Total distance 42 + 28.9682 km over 1.75 + 1.16667 h.",
        ),
        turn(
            [call("calculator", {"expression": "24.3319 * (1.75 + 1.16667)"}, "call_4")],
            "Verify: speed times total time should give the total distance 70.9682 km.",
        ),
        "The average speed is about 24.33 km/h (70.9682 km in 2.91667 h; check: 24.3319 x 2.91667 = 70.9681 km).",
    ]
    client = ReplayChatCompletionClient(
        script,
        model_info={
            "vision": False,
            "function_calling": True,
            "json_output": False,
            "family": "unknown",
            "structured_output": False,
        },
    )
    tools: list[Any] = [
        FunctionTool(calculator, description=calculator.__doc__ or ""),
        FunctionTool(unit_convert, description=unit_convert.__doc__ or ""),
    ]
    agent = AssistantAgent(
        "assistant",
        model_client=client,
        tools=tools,
        system_message=SYSTEM_MESSAGE,
        reflect_on_tool_use=True,
        max_tool_iterations=5,
    )
    result = await agent.run(task=TASK)
    state = await agent.save_state()
    return {
        "id": "agentchat-cyclist",
        "system_message": SYSTEM_MESSAGE,
        "tools": [dict(t.schema) for t in tools],
        "task_result": json.loads(result.model_dump_json()),
        "state": json.loads(json.dumps(state, default=str)),
    }


def _main() -> None:
    rec = asyncio.run(record_sample_agentchat_run())
    path = sample_path(SAMPLE_AGENTCHAT)
    path.write_text(json.dumps(rec, indent=1, ensure_ascii=False) + "\n", "utf-8")


if __name__ == "__main__":
    _main()
