"""The compaction policy and the view it produces (shared by the context and the wrapping client).

Given the blocks of a history, :func:`compact` decides which closed blocks are shown only through their memento
(monotonically: a compacted block never comes back), writes the missing mementos (each block at most once) and
builds the message list a model sees:

``[pinned blocks] + [memory message] + [one digest message with the mementos, oldest first] + [kept blocks]``

Policy, in order:

1. **soft** — ``trigger="block"``: every closed block except the pinned first ones and the last
   ``keep_last_n_blocks`` closed blocks is compacted as soon as it leaves that window (the sawtooth);
   ``trigger="tokens"``: the same candidates are compacted oldest first only when the view exceeds
   ``token_limit``, down to ``low_watermark * token_limit`` (hysteresis, so not every turn compacts).
2. **hard** (only when ``token_limit`` is set and the view still exceeds it): compact the kept and pinned closed
   blocks too, oldest first, except the most recent block; then drop the oldest mementos from the digest (they
   stay in the store, recallable); then truncate the text of the blocks still shown verbatim (view copies only).
   The hard stages use no model, so a history that is already far over the limit is brought under it in one call.

Each block appears either whole or as one memento line: a tool call is never separated from its results.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from autogen_core import EVENT_LOGGER_NAME, CancellationToken
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from pydantic import BaseModel, Field

from .._events import _Event
from ._blocks import Block, TokenCounter
from ._writers import MementoWriter, mask_block

DIGEST_SOURCE = "memento"
DIGEST_HEADER = "[Mementos of earlier blocks, oldest first; recall_block(id) returns a block verbatim]"

OnMemento = Callable[[Block], Awaitable[None]]


class CompactionPolicy(BaseModel):
    """When blocks are compacted and how far.

    Args:
        keep_last_n_blocks: closed blocks kept whole after the newest (the open block is always kept).
        trigger: ``"block"`` compacts after each completed block; ``"tokens"`` only over ``token_limit``.
        token_limit: the view's token budget (required for ``trigger="tokens"``); enables the hard fallback.
        low_watermark: with ``trigger="tokens"``, compact down to this fraction of ``token_limit``.
        pin_first_blocks: leading blocks never compacted by the soft policy (the task statement).
        max_llm_mementos_per_call: at most this many mementos per view from a writer that calls a model; the rest
            are masked, so a long history loaded over the limit costs a bounded number of calls.
    """

    keep_last_n_blocks: int = Field(default=2, ge=0)
    trigger: Literal["block", "tokens"] = "block"
    token_limit: int | None = Field(default=None, ge=1)
    low_watermark: float = Field(default=0.7, gt=0.0, le=1.0)
    pin_first_blocks: int = Field(default=1, ge=0)
    max_llm_mementos_per_call: int = Field(default=16, ge=0)

    def model_post_init(self, __context: object) -> None:
        if self.trigger == "tokens" and self.token_limit is None:
            raise ValueError('trigger="tokens" needs a token_limit')


@dataclass
class ViewStats:
    """What one view cost: tokens of the uncompacted history (``full``) and as shown (``view``), and how it was built.

    ``view`` includes the digest and the memory message; ``full`` is the history alone, as an unbounded context
    would send it.
    """

    full_tokens: int
    view_tokens: int
    blocks: int
    compacted_blocks: int
    digest_lines: int
    omitted_mementos: int
    truncated_blocks: int
    hard: bool
    newly_compacted: int = 0

    def as_dict(self) -> dict[str, int | bool]:
        return dict(vars(self))


class MementoCompactionEvent(_Event):
    """A view compacted blocks (or took the hard path): tokens before/after and how, for per-compaction metrics."""


def log_compaction(scope: str, stats: ViewStats) -> None:
    """Log a :class:`MementoCompactionEvent` on AutoGen's event logger when ``stats`` shows a compaction."""
    if stats.newly_compacted or stats.hard:
        logging.getLogger(EVENT_LOGGER_NAME).info(MementoCompactionEvent(scope=scope, **stats.as_dict()))


def memento_line(block: Block) -> str:
    """The digest line of a compacted block."""
    return f"- [{block.block_id}] {block.agent}: {block.memento}"


def _line_tokens(block: Block, counter: TokenCounter) -> int:
    # Cached on the block: its memento and id never change once set.
    if block.line_tokens is None:
        block.line_tokens = counter([UserMessage(content=memento_line(block), source=DIGEST_SOURCE)])
    return block.line_tokens


def _cut(text: str, keep: int, block_id: str) -> str:
    if len(text) <= keep:
        return text
    return text[: max(0, keep)] + f"\n[... {len(text) - keep} characters truncated; recall_block('{block_id}')]"


def truncate_messages(messages: Sequence[LLMMessage], keep_chars: int, block_id: str) -> list[LLMMessage]:
    """Copies of ``messages`` with every text field cut to ``keep_chars`` characters (structure kept)."""
    out: list[LLMMessage] = []
    for m in messages:
        if isinstance(m, (UserMessage, SystemMessage)) and isinstance(m.content, str):
            out.append(m.model_copy(update={"content": _cut(m.content, keep_chars, block_id)}))
        elif isinstance(m, AssistantMessage):
            upd: dict[str, object] = {}
            if isinstance(m.content, str):
                upd["content"] = _cut(m.content, keep_chars, block_id)
            if m.thought:
                upd["thought"] = _cut(m.thought, keep_chars, block_id)
            out.append(m.model_copy(update=upd))
        elif isinstance(m, FunctionExecutionResultMessage):
            out.append(
                FunctionExecutionResultMessage(
                    content=[
                        FunctionExecutionResult(
                            content=_cut(r.content, keep_chars, block_id),
                            name=r.name,
                            call_id=r.call_id,
                            is_error=r.is_error,
                        )
                        for r in m.content
                    ]
                )
            )
        else:
            out.append(m)
    return out


def _shown(block: Block, counter: TokenCounter) -> int:
    if block.closed:
        return block.tokens
    return counter(block.render_messages())


async def _ensure_memento(
    block: Block,
    writer: MementoWriter,
    budget: list[int],
    on_memento: OnMemento | None,
    ct: CancellationToken | None,
    counter: TokenCounter,
    *,
    masking_only: bool = False,
) -> int | None:
    """Give ``block`` a memento (once) and compact it; return its digest-line tokens.

    Returns ``None`` (and leaves the block whole) when the memento line would not save at least a quarter of the
    block: the soft policy never makes a block bigger, and short messages stay verbatim. The hard path
    (``masking_only``) compacts regardless, since its digest lines can then be dropped oldest first.
    """
    if block.memento is None:
        if masking_only or (writer.uses_llm and budget[0] <= 0):
            block.memento, block.memento_source = mask_block(block), "masking"
        else:
            if writer.uses_llm:
                budget[0] -= 1
            block.memento = await writer.write(block, ct)
            block.memento_source = type(writer).__name__
        if on_memento is not None:
            await on_memento(block)
    tokens = _line_tokens(block, counter)
    if not masking_only and tokens > 0.75 * block.tokens:
        return None
    block.compacted = True
    return tokens


async def compact(
    blocks: Sequence[Block],
    policy: CompactionPolicy,
    writer: MementoWriter,
    counter: TokenCounter,
    *,
    memory_message: LLMMessage | None = None,
    on_memento: OnMemento | None = None,
    cancellation_token: CancellationToken | None = None,
) -> tuple[list[LLMMessage], ViewStats]:
    """Apply the policy to ``blocks`` (updating their ``compacted``/``memento``) and return the view."""
    limit = policy.token_limit
    budget = [policy.max_llm_mementos_per_call]
    compacted_before = sum(1 for b in blocks if b.compacted)
    closed_idx = [i for i, b in enumerate(blocks) if b.closed]
    keep = set(closed_idx[len(closed_idx) - policy.keep_last_n_blocks :]) if policy.keep_last_n_blocks else set()
    pinned = set(range(min(policy.pin_first_blocks, len(blocks))))
    mem_tokens = counter([memory_message]) if memory_message is not None else 0
    header_tokens = counter([UserMessage(content=DIGEST_HEADER, source=DIGEST_SOURCE)])
    line_tok: dict[int, int] = {
        i: _line_tokens(b, counter) for i, b in enumerate(blocks) if b.compacted and b.memento is not None
    }
    for b in blocks:
        if b.compacted and b.memento is None:  # defensive: a compacted block always carries a memento
            b.compacted = False

    # Running totals, so deciding block by block stays linear in the history length.
    shown_tok = {i: _shown(b, counter) for i, b in enumerate(blocks) if not b.compacted}
    verbatim = sum(shown_tok.values())
    lines = sum(line_tok.values())

    def total() -> int:
        return verbatim + (header_tokens + lines if line_tok else 0) + mem_tokens

    def mark(i: int, t: int | None) -> None:
        nonlocal verbatim, lines
        if t is not None:
            line_tok[i] = t
            lines += t
            verbatim -= shown_tok.pop(i)

    candidates = [i for i in closed_idx if i not in keep and i not in pinned and not blocks[i].compacted]
    if writer.waits_for_model and blocks and blocks[-1].kind == "tool" and blocks[-1].memento is None:
        candidates = [i for i in candidates if i != len(blocks) - 1]
    if policy.trigger == "block":
        for i in candidates:
            mark(i, await _ensure_memento(blocks[i], writer, budget, on_memento, cancellation_token, counter))
    elif limit is not None and total() > limit:
        target = math.floor(policy.low_watermark * limit)
        for i in candidates:
            if total() <= target:
                break
            mark(i, await _ensure_memento(blocks[i], writer, budget, on_memento, cancellation_token, counter))

    hard = False
    if limit is not None and total() > limit:
        hard = True
        last = len(blocks) - 1
        for i in closed_idx:
            if total() <= limit:
                break
            if i != last and not blocks[i].compacted:
                # The hard path never waits for a model: masking is immediate and cannot fail.
                t = await _ensure_memento(
                    blocks[i], writer, budget, on_memento, cancellation_token, counter, masking_only=True
                )
                mark(i, t)

    # Digest lines, oldest dropped first when the hard limit still is exceeded.
    digest_idx = sorted(line_tok)
    omitted: list[int] = []
    if limit is not None and total() > limit:
        hard = True
        over = total() - limit
        while digest_idx and over > 0:
            i = digest_idx.pop(0)
            omitted.append(i)
            over -= line_tok[i]
        if over > 0 and memory_message is not None:
            # The team memory is bounded by its own budget, not this one: it is the last thing given up, and
            # digest lines it frees room for come back.
            over -= mem_tokens
            memory_message, mem_tokens = None, 0
            while omitted and over + line_tok[omitted[-1]] <= 0:
                over += line_tok[omitted[-1]]
                digest_idx.insert(0, omitted.pop())
    digest_lines: list[str] = []
    if omitted:
        first, lastb = blocks[omitted[0]], blocks[omitted[-1]]
        digest_lines.append(f"- ({len(omitted)} older mementos archived, blocks {first.block_id} .. {lastb.block_id})")
    digest_lines += [memento_line(blocks[i]) for i in digest_idx]
    digest = (
        UserMessage(content=DIGEST_HEADER + "\n" + "\n".join(digest_lines), source=DIGEST_SOURCE)
        if digest_lines
        else None
    )

    # Verbatim blocks, truncated (as copies) only if everything above was not enough.
    shown = [i for i, b in enumerate(blocks) if not b.compacted]
    rendered: dict[int, list[LLMMessage]] = {i: blocks[i].render_messages() for i in shown}
    truncated = 0
    if limit is not None:
        fixed = (counter([digest]) if digest is not None else 0) + mem_tokens
        closed_shown = [i for i in shown if blocks[i].closed]
        open_tokens = sum(_shown(blocks[i], counter) for i in shown if not blocks[i].closed)
        verbatim = sum(blocks[i].tokens for i in closed_shown)
        if closed_shown and fixed + open_tokens + verbatim > limit:
            hard = True
            share = max(1, (limit - fixed - open_tokens) // len(closed_shown))
            for i in closed_shown:
                b = blocks[i]
                if b.tokens <= share:
                    continue
                keep_chars = max(16, 4 * share)
                msgs = truncate_messages(rendered[i], keep_chars, b.block_id)
                for _ in range(12):  # shrink geometrically until it fits: terminates for any counter
                    if counter(msgs) <= share or keep_chars <= 16:
                        break
                    keep_chars = max(16, keep_chars // 2)
                    msgs = truncate_messages(rendered[i], keep_chars, b.block_id)
                rendered[i] = msgs
                truncated += 1

    view: list[LLMMessage] = []
    first_compacted = next((i for i, b in enumerate(blocks) if b.compacted), None)
    anchor = first_compacted if first_compacted is not None else min(policy.pin_first_blocks, len(blocks))
    for i in range(len(blocks)):
        if i == anchor:
            if memory_message is not None:
                view.append(memory_message)
            if digest is not None:
                view.append(digest)
        if i in rendered:
            view.extend(rendered[i])
    if anchor >= len(blocks) and memory_message is not None:
        view.append(memory_message)

    # What the same history costs without this context (no digest, no memory message): AutoGen's default.
    full = sum((b.tokens if b.closed else counter(b.render_messages())) for b in blocks)
    stats = ViewStats(
        full_tokens=full,
        view_tokens=counter(view) if view else 0,
        blocks=len(blocks),
        compacted_blocks=sum(1 for b in blocks if b.compacted),
        digest_lines=len(digest_lines),
        omitted_mementos=len(omitted),
        truncated_blocks=truncated,
        hard=hard,
        newly_compacted=sum(1 for b in blocks if b.compacted) - compacted_before,
    )
    return view, stats
