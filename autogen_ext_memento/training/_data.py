"""Tokenized training samples: agent trajectories in the chat format, and OpenMementos rows.

Labels follow the published recipe (loss on every model-written token, block tokens included; the prompt is
``-100``), adapted to the agent chat format: system, user and tool-response turns and every turn header are
``-100``; assistant bodies and their ``<|im_end|>`` are labelled; in a *closure* turn the backend-appended prefix
``<|block_end|><|summary_start|>`` is ``-100`` and the memento with its ``<|summary_end|>`` is labelled (the backend
closes that turn itself, so its ``<|im_end|>`` is not labelled either).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from autogen_core.models import LLMMessage, SystemMessage, UserMessage
from autogen_core.tools import Tool, ToolSchema
from pydantic import TypeAdapter

from ..chat_format import CLOSURE_PREFIX, IM_END, Rendering, TurnEncoder, format_block, render, wrap_think
from ..grammar import SUMMARY_START
from ._collator import IGNORE_INDEX


@dataclass
class TokenizedSample:
    """One training sample: token ids and labels of equal length (``-100`` = no loss)."""

    input_ids: list[int]
    labels: list[int]

    def as_dict(self) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids, "labels": self.labels}

    @property
    def n_labelled(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def samples_dataset(samples: Sequence[TokenizedSample]) -> Any:
    """Tokenized samples as a ``datasets.Dataset`` with ``input_ids`` and ``labels`` columns."""
    import datasets

    return datasets.Dataset.from_dict(
        {"input_ids": [s.input_ids for s in samples], "labels": [s.labels for s in samples]}
    )


def encode_rendering(rendering: Rendering, encoder: TurnEncoder, tokenizer: Any) -> TokenizedSample:
    """Token ids and labels of a rendered history (see the module docstring for what is labelled)."""
    summary_start = tokenizer.convert_tokens_to_ids(SUMMARY_START)
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    ids: list[int] = []
    labels: list[int] = []
    for turn in rendering.turns:
        head = encoder.header(turn.role)
        body = encoder.body(turn)
        foot = encoder.footer
        ids += head
        labels += [IGNORE_INDEX] * len(head)
        ids += body
        if not turn.generated:
            labels += [IGNORE_INDEX] * (len(body) + len(foot))
        elif turn.body.startswith(CLOSURE_PREFIX):
            cut = body.index(summary_start) + 1 if summary_start in body else 0
            labels += [IGNORE_INDEX] * cut + body[cut:]
            labels += [IGNORE_INDEX] * len(foot)
        else:
            labels += body
            labels += [t if t == im_end else IGNORE_INDEX for t in foot]
        ids += foot
    if rendering.generation_prompt:
        head = encoder.header("assistant")
        ids += head
        labels += [IGNORE_INDEX] * len(head)
    return TokenizedSample(ids, labels)


def encode_messages(
    messages: Sequence[LLMMessage],
    tokenizer: Any,
    tools: Sequence[Tool | ToolSchema] = (),
    encoder: TurnEncoder | None = None,
) -> TokenizedSample:
    """Render AutoGen messages in the agent chat format and tokenize them with labels."""
    enc = encoder or TurnEncoder(tokenizer)
    return encode_rendering(render(messages, tools), enc, tokenizer)


def encode_trace(
    problem: str,
    response: str,
    tokenizer: Any,
    *,
    system: str | None = None,
    encoder: TurnEncoder | None = None,
) -> TokenizedSample:
    """A reasoning trace (OpenMementos ``default``: ``problem``, memento-formatted ``response``) as one sample.

    The problem is a ``user`` turn (an optional ``system`` turn first); the whole response is one labelled
    ``assistant`` body, blocks and mementos included.
    """
    from autogen_core.models import AssistantMessage

    msgs: list[LLMMessage] = []
    if system:
        msgs.append(SystemMessage(content=system))
    msgs.append(UserMessage(content=problem, source="user"))
    msgs.append(AssistantMessage(content=response, source="assistant"))
    return encode_messages(msgs, tokenizer, encoder=encoder)


def assemble_full_response(row: Mapping[str, Any], *, think: bool = True) -> str:
    """Build the memento-formatted response of an OpenMementos ``full`` row from its sentences and blocks.

    ``blocks`` are ``[start, end]`` *inclusive* sentence indices and ``block_summaries`` the mementos, one per
    block. Sentences are joined with single spaces inside a block; sentences after the last block (the final answer)
    follow ``</think>``; sentences before the first block open the thinking section.
    """
    sentences: list[str] = list(row["sentences"])
    blocks = [tuple(int(x) for x in b) for b in row["blocks"]]
    summaries: list[str] = list(row["block_summaries"])
    if len(blocks) != len(summaries):
        raise ValueError(f"{len(blocks)} blocks but {len(summaries)} block_summaries")
    parts: list[str] = []
    cursor = 0
    for (start, end), summary in zip(blocks, summaries, strict=True):
        if start < cursor or end < start or end >= len(sentences):
            raise ValueError(f"bad block [{start}, {end}] after sentence {cursor} of {len(sentences)}")
        if start > cursor:
            parts.append(" ".join(sentences[cursor:start]))
        work = " ".join(sentences[start : end + 1])
        parts.append(format_block(work, summary))
        cursor = end + 1
    body = "\n".join(parts)
    tail = " ".join(sentences[cursor:])
    if think:
        return f"{wrap_think(body)}\n{tail}" if tail else wrap_think(body)
    return f"{body}\n{tail}" if tail else body


OpenMementosConfig = Literal["default", "full", "auto"]
_RESPONSE_FIELDS = ("response", "memento_response", "assembled", "text")


def row_to_sample(
    row: Mapping[str, Any],
    tokenizer: Any,
    *,
    config: OpenMementosConfig = "auto",
    encoder: TurnEncoder | None = None,
    tools: Sequence[Tool | ToolSchema] = (),
) -> TokenizedSample:
    """One dataset row (OpenMementos ``default``/``full``, or an agent trajectory) as a tokenized sample.

    Rows with ``messages`` (serialised AutoGen ``LLMMessage`` dicts, as ``model_dump()`` writes them) are agent
    trajectories rendered in the chat format, with the row's own ``tools`` (JSON tool schemas, as the annotation
    pipeline writes them) unless ``tools`` is given. ``full`` rows use an assembled response string when one is present
    (the annotation pipeline writes one) and otherwise assemble it from ``sentences``/``blocks``/``block_summaries``.
    """
    if "messages" in row and row["messages"] is not None:
        raw = row["messages"]
        if isinstance(raw, str):
            raw = json.loads(raw)
        msgs = TypeAdapter(list[LLMMessage]).validate_python(raw)
        row_tools = row.get("tools")
        if not tools and row_tools:
            tools = json.loads(row_tools) if isinstance(row_tools, str) else list(row_tools)
        return encode_messages(msgs, tokenizer, tools, encoder)
    problem = row.get("problem") or row.get("prompt") or row.get("question")
    if problem is None:
        raise ValueError(f"row has neither 'messages' nor 'problem': keys {sorted(row)}")
    response = next((row[f] for f in _RESPONSE_FIELDS if isinstance(row.get(f), str) and row[f]), None)
    if response is None and config != "default" and row.get("blocks") is not None:
        response = assemble_full_response(row)
    if response is None:
        raise ValueError(f"row has no response string and no blocks: keys {sorted(row)}")
    return encode_trace(str(problem), response, tokenizer, encoder=encoder)


def load_dataset_rows(path: str | Path, *, split: str = "train", config: str | None = None) -> Any:
    """Load rows with ``datasets``: a local JSONL/JSON/parquet file or directory, or (for users) a hub name."""
    import datasets

    p = Path(path)
    if p.exists():
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        pq = [str(f) for f in files if f.suffix == ".parquet"]
        js = [str(f) for f in files if f.suffix in (".jsonl", ".json")]
        if pq:
            return datasets.load_dataset("parquet", data_files=pq, split="train")
        if js:
            return datasets.load_dataset("json", data_files=js, split="train")
        raise FileNotFoundError(f"no .jsonl, .json or .parquet files under {p}")
    return datasets.load_dataset(str(path), config, split=split)


def build_dataset(
    rows: Iterable[Mapping[str, Any]],
    tokenizer: Any,
    *,
    config: OpenMementosConfig = "auto",
    max_length: int | None = None,
    tools: Sequence[Tool | ToolSchema] = (),
) -> Any:
    """Tokenize rows into a ``datasets.Dataset`` with ``input_ids`` and ``labels`` (over-long rows are dropped)."""
    import datasets

    enc = TurnEncoder(tokenizer)
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
    for row in rows:
        s = row_to_sample(row, tokenizer, config=config, encoder=enc, tools=tools)
        if max_length is not None and len(s.input_ids) > max_length:
            continue
        if s.n_labelled == 0:
            continue
        out["input_ids"].append(s.input_ids)
        out["labels"].append(s.labels)
    return datasets.Dataset.from_dict(out)
