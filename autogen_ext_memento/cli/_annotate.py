"""``autogen-memento annotate``: OpenMementos-style block/memento annotation of reasoning traces or AgentChat runs.

Examples::

    # the bundled samples, offline, with the deterministic heuristic client
    autogen-memento annotate bundled:reasoning --out reasoning.jsonl --min-block-tokens 200 --two-pass
    autogen-memento annotate bundled:agentchat --out agent.jsonl
    # any AutoGen model client from a ComponentModel file (JSON or YAML)
    autogen-memento annotate traces.jsonl --out out.jsonl --model-config openai.yaml --concurrency 16

Reruns with the same ``--out`` skip the ids already written (resume). Exit status 1 when some samples failed
(rerun to retry them), 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from ._args import existing_file, existing_path, non_negative_float, non_negative_int, positive_int

_AGENT_KEYS = ("task_result", "state", "llm_messages", "messages", "llm_context", "agent_states")
_BUNDLED = ("bundled:reasoning", "bundled:agentchat")


def input_file(text: str) -> str:
    """An input of ``annotate``: a bundled sample name or an existing file."""
    return text if text in _BUNDLED else existing_file(text)


def window(text: str) -> int:
    """Units per boundary-scoring request (at least 2)."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``annotate`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "annotate",
        help="annotate reasoning traces or AgentChat runs with blocks and mementos (JSONL, OpenMementos 'full')",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=input_file,
        help="input files (.jsonl/.json), or bundled:reasoning / bundled:agentchat",
    )
    p.add_argument("--out", required=True, help="output JSONL (appended to; finished ids are skipped)")
    p.add_argument("--kind", choices=("auto", "reasoning", "agentchat"), default="auto")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--model-config", type=existing_file, help="ComponentModel JSON/YAML of any AutoGen ChatCompletionClient"
    )
    src.add_argument(
        "--replay",
        type=existing_file,
        help="JSON/YAML list of canned answers for a ReplayChatCompletionClient (sequential)",
    )
    p.add_argument("--lam", type=non_negative_float, default=0.5, help="CV penalty weight λ (default 0.5)")
    p.add_argument("--min-block-tokens", type=non_negative_int, default=200)
    p.add_argument("--max-block-tokens", type=positive_int, default=None)
    p.add_argument("--two-pass", action="store_true", help="second boundary-scoring pass (window 11), averaged")
    p.add_argument("--window", type=window, default=16)
    p.add_argument("--tau", type=non_negative_float, default=8.0, help="judge pass threshold /10 (default 8)")
    p.add_argument("--rounds", type=positive_int, default=2, help="judge rounds T (default 2)")
    p.add_argument("--concurrency", type=positive_int, default=8)
    p.add_argument("--max-retries", type=non_negative_int, default=4)
    p.add_argument("--backoff", type=non_negative_float, default=1.0, help="base backoff seconds (doubles per retry)")
    p.add_argument("--price-in", type=non_negative_float, default=0.0, help="prompt price per million tokens")
    p.add_argument("--price-out", type=non_negative_float, default=0.0, help="completion price per million tokens")
    p.add_argument(
        "--tokenizer", type=existing_path, help="count tokens with this local HF tokenizer instead of the regex counter"
    )
    p.add_argument("--limit", type=positive_int, default=None, help="annotate at most this many samples")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--summary-out", help="also write the summary JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _load_data(path: str) -> Any:
    text = Path(path).read_text("utf-8")
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def _client(args: argparse.Namespace) -> Any:
    from autogen_core.models import ChatCompletionClient

    from autogen_ext_memento.pipeline import HeuristicChatCompletionClient

    if args.model_config:
        return ChatCompletionClient.load_component(_load_data(args.model_config))
    if args.replay:
        from autogen_ext.models.replay import ReplayChatCompletionClient

        data = _load_data(args.replay)
        answers = data["chat_completions"] if isinstance(data, dict) else data
        return ReplayChatCompletionClient([str(a) for a in answers])
    return HeuristicChatCompletionClient()


def _resolve(path: str) -> tuple[str, str | None]:
    from autogen_ext_memento.pipeline import SAMPLE_AGENTCHAT, SAMPLE_REASONING, sample_path

    if path == "bundled:reasoning":
        return str(sample_path(SAMPLE_REASONING)), "reasoning"
    if path == "bundled:agentchat":
        return str(sample_path(SAMPLE_AGENTCHAT)), "agentchat"
    return path, None


def _detect(path: str) -> str:
    p = Path(path)
    if p.suffix == ".jsonl":
        for line in p.read_text("utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                return "agentchat" if any(k in rec for k in _AGENT_KEYS) else "reasoning"
        return "reasoning"
    data = json.loads(p.read_text("utf-8"))
    first = data[0] if isinstance(data, list) and data else data
    if isinstance(first, dict) and any(k in first for k in _AGENT_KEYS):
        return "agentchat"
    return "reasoning"


def _samples(args: argparse.Namespace) -> list[Any]:
    from autogen_ext_memento.pipeline import load_agent_inputs, load_reasoning_inputs

    out: list[Any] = []
    for raw in args.inputs:
        path, kind = _resolve(raw)
        kind = kind or (args.kind if args.kind != "auto" else _detect(path))
        out.extend(load_agent_inputs(path) if kind == "agentchat" else load_reasoning_inputs(path))
    return out[: args.limit] if args.limit is not None else out


def _counter(args: argparse.Namespace) -> Any:
    from autogen_ext_memento.pipeline import regex_token_count

    if not args.tokenizer:
        return regex_token_count
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    return lambda s: len(tok.encode(s, add_special_tokens=False))


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable report of a run."""
    bps = summary.get("blocks_per_sample", {})
    bt = summary.get("block_tokens", {})
    st = summary.get("summary_tokens", {})
    usage = summary.get("usage", {})
    rates = " -> ".join(f"{100 * r:.0f}%" for r in summary.get("pass_rate_by_round", []))
    lines = [
        f"samples: {summary.get('samples', 0)} in output ({summary.get('processed', 0)} new, "
        f"{summary.get('skipped', 0)} already done, {len(summary.get('failed', {}))} failed)",
        f"blocks: {summary.get('blocks', 0)}; per sample median {bps.get('median', 0)} "
        f"(min {bps.get('min', 0)}, max {bps.get('max', 0)})",
        f"block tokens: median {bt.get('median', 0)}, mean {bt.get('mean', 0)}; memento tokens: median "
        f"{st.get('median', 0)}, mean {st.get('mean', 0)}",
        f"compression ratio (memento/block tokens): {summary.get('compression_ratio', 0)}"
        f" (median per block {summary.get('block_compression', {}).get('median', 0)})",
        f"judge pass rate by round (score >= tau): {rates}; mean score {summary.get('mean_judge_score', 0)}",
        f"LLM: {usage.get('calls', 0)} calls, {usage.get('prompt_tokens', 0)} prompt + "
        f"{usage.get('completion_tokens', 0)} completion tokens, {usage.get('retries', 0)} retries, "
        f"cost {usage.get('cost', 0)}; {summary.get('elapsed_s', 0)} s",
    ]
    for sid, err in list(summary.get("failed", {}).items())[:5]:
        lines.append(f"failed {sid}: {err}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the annotation described by parsed CLI arguments."""
    from autogen_ext_memento.pipeline import AnnotationPipeline, PipelineConfig, Pricing

    client = _client(args)
    config = PipelineConfig(
        lam=args.lam,
        min_block_tokens=args.min_block_tokens,
        max_block_tokens=args.max_block_tokens,
        two_pass=args.two_pass,
        window=args.window,
        tau=args.tau,
        rounds=args.rounds,
        # A replay client answers in call order: only sequential calls keep that order deterministic.
        concurrency=1 if args.replay else args.concurrency,
        max_retries=args.max_retries,
        backoff_base=args.backoff,
        pricing=Pricing(prompt_per_million=args.price_in, completion_per_million=args.price_out),
    )
    pipe = AnnotationPipeline(client, config, count_tokens=_counter(args))

    async def go() -> Any:
        try:
            return await pipe.run(_samples(args), args.out, progress=not args.no_progress)
        finally:
            await client.close()

    summary = asyncio.run(go()).as_dict()
    if args.summary_out:
        Path(args.summary_out).write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 1 if summary["failed"] else 0
