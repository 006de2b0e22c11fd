"""The view a compaction policy produces from the blocks of a history (shared by the context and the wrapping client).

Given the blocks of a history, :func:`compact` decides which closed blocks are shown only through their memento
(monotonically: a compacted block never comes back), writes the missing mementos (each block at most once) and
builds the message list a model sees:

``[leading system messages] + [pinned blocks] + [memory message] + [one digest message with the mementos, oldest
first] + [kept blocks]``

The leading system messages (the system prompt: every ``SystemMessage`` before the first other message) are always
shown first and whole: no stage below compacts, truncates or moves them, and ``pin_first_blocks`` counts the blocks
after them. They do count against ``token_limit``; a system prompt alone over the limit is kept anyway (the context
logs a :class:`MementoSystemOverBudgetEvent` and a warning).

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

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from autogen_core import CancellationToken
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)

from ._blocks import Block, TokenCounter
from ._policy import CompactionPolicy, ViewStats, leading_system_blocks
from ._writers import MementoWriter, mask_block

DIGEST_SOURCE = "memento"
DIGEST_HEADER = "[Mementos of earlier blocks, oldest first; recall_block(id) returns a block verbatim]"

OnMemento = Callable[[Block], Awaitable[None]]


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


@dataclass
class _Tally:
    """Running token totals of the view being built, so deciding block by block stays linear in the history."""

    shown: dict[int, int]
    lines: dict[int, int]
    header: int
    memory: int
    verbatim: int = 0
    line_total: int = 0

    def __post_init__(self) -> None:
        self.verbatim = sum(self.shown.values())
        self.line_total = sum(self.lines.values())

    def total(self) -> int:
        return self.verbatim + (self.header + self.line_total if self.lines else 0) + self.memory

    def mark(self, i: int, tokens: int | None) -> None:
        """Show block ``i`` as a digest line of ``tokens`` tokens (``None``: it stays whole)."""
        if tokens is not None:
            self.lines[i] = tokens
            self.line_total += tokens
            self.verbatim -= self.shown.pop(i)


async def _apply_policy(
    blocks: Sequence[Block],
    policy: CompactionPolicy,
    writer: MementoWriter,
    tally: _Tally,
    lead: int,
    ensure: Callable[[Block, bool], Awaitable[int | None]],
) -> bool:
    """The soft then the hard compaction stages (module docstring); return whether the hard stage ran."""
    limit = policy.token_limit
    closed_idx = [i for i, b in enumerate(blocks) if b.closed]
    keep = set(closed_idx[len(closed_idx) - policy.keep_last_n_blocks :]) if policy.keep_last_n_blocks else set()
    pinned = set(range(lead, min(lead + policy.pin_first_blocks, len(blocks))))
    candidates = [i for i in closed_idx if i >= lead and i not in keep and i not in pinned and not blocks[i].compacted]
    if writer.waits_for_model and blocks and blocks[-1].kind == "tool" and blocks[-1].memento is None:
        candidates = [i for i in candidates if i != len(blocks) - 1]
    if policy.trigger == "block":
        for i in candidates:
            tally.mark(i, await ensure(blocks[i], False))
    elif limit is not None and tally.total() > limit:
        target = math.floor(policy.low_watermark * limit)
        for i in candidates:
            if tally.total() <= target:
                break
            tally.mark(i, await ensure(blocks[i], False))
    if limit is None or tally.total() <= limit:
        return False
    last = len(blocks) - 1
    for i in closed_idx:
        if tally.total() <= limit:
            break
        if i != last and i >= lead and not blocks[i].compacted:
            # The hard path never waits for a model: masking is immediate and cannot fail.
            tally.mark(i, await ensure(blocks[i], True))
    return True


def _digest(
    blocks: Sequence[Block], tally: _Tally, limit: int | None, memory_message: LLMMessage | None
) -> tuple[UserMessage | None, int, int, LLMMessage | None]:
    """The digest message (oldest lines dropped over the hard limit); also the line and omitted counts and the
    memory message that is still shown."""
    digest_idx = sorted(tally.lines)
    omitted: list[int] = []
    if limit is not None and tally.total() > limit:
        over = tally.total() - limit
        while digest_idx and over > 0:
            i = digest_idx.pop(0)
            omitted.append(i)
            over -= tally.lines[i]
        if over > 0 and memory_message is not None:
            # The team memory is bounded by its own budget, not this one: it is the last thing given up, and
            # digest lines it frees room for come back.
            over -= tally.memory
            memory_message, tally.memory = None, 0
            while omitted and over + tally.lines[omitted[-1]] <= 0:
                over += tally.lines[omitted[-1]]
                digest_idx.insert(0, omitted.pop())
    lines: list[str] = []
    if omitted:
        first, lastb = blocks[omitted[0]], blocks[omitted[-1]]
        lines.append(f"- ({len(omitted)} older mementos archived, blocks {first.block_id} .. {lastb.block_id})")
    lines += [memento_line(blocks[i]) for i in digest_idx]
    digest = UserMessage(content=DIGEST_HEADER + "\n" + "\n".join(lines), source=DIGEST_SOURCE) if lines else None
    return digest, len(lines), len(omitted), memory_message


def _truncate(
    blocks: Sequence[Block],
    rendered: dict[int, list[LLMMessage]],
    limit: int,
    fixed: int,
    lead: int,
    counter: TokenCounter,
) -> tuple[int, bool]:
    """Cut (as copies) the text of the closed blocks shown whole until the view fits.

    ``fixed``: tokens of the digest and memory message. The leading system messages are never cut. Returns how
    many blocks were cut and whether the view was over the limit before.
    """
    closed_shown = [i for i in rendered if blocks[i].closed and i >= lead]
    fixed += sum(blocks[i].tokens for i in rendered if i < lead)
    open_tokens = sum(_shown(blocks[i], counter) for i in rendered if not blocks[i].closed)
    verbatim = sum(blocks[i].tokens for i in closed_shown)
    if not closed_shown or fixed + open_tokens + verbatim <= limit:
        return 0, False
    share = max(1, (limit - fixed - open_tokens) // len(closed_shown))
    truncated = 0
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
    return truncated, True


def _assemble(
    blocks: Sequence[Block],
    rendered: dict[int, list[LLMMessage]],
    anchor: int,
    memory_message: LLMMessage | None,
    digest: LLMMessage | None,
) -> list[LLMMessage]:
    """The view: blocks in order, the memory message and the digest inserted before block ``anchor``."""
    view: list[LLMMessage] = []
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
    return view


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
    lead = leading_system_blocks(blocks)
    for b in blocks:
        if b.compacted and b.memento is None:  # defensive: a compacted block always carries a memento
            b.compacted = False
    tally = _Tally(
        shown={i: _shown(b, counter) for i, b in enumerate(blocks) if not b.compacted},
        lines={i: _line_tokens(b, counter) for i, b in enumerate(blocks) if b.compacted},
        header=counter([UserMessage(content=DIGEST_HEADER, source=DIGEST_SOURCE)]),
        memory=counter([memory_message]) if memory_message is not None else 0,
    )

    async def ensure(block: Block, masking_only: bool) -> int | None:
        return await _ensure_memento(
            block, writer, budget, on_memento, cancellation_token, counter, masking_only=masking_only
        )

    hard = await _apply_policy(blocks, policy, writer, tally, lead, ensure)
    if limit is not None and tally.total() > limit:
        hard = True
    digest, digest_lines, omitted, memory_message = _digest(blocks, tally, limit, memory_message)
    rendered = {i: b.render_messages() for i, b in enumerate(blocks) if not b.compacted}
    truncated = 0
    if limit is not None:
        fixed = (counter([digest]) if digest is not None else 0) + tally.memory
        truncated, over = _truncate(blocks, rendered, limit, fixed, lead, counter)
        hard = hard or over
    first_compacted = next((i for i, b in enumerate(blocks) if b.compacted), None)
    anchor = first_compacted if first_compacted is not None else min(lead + policy.pin_first_blocks, len(blocks))
    view = _assemble(blocks, rendered, anchor, memory_message, digest)

    # What the same history costs without this context (no digest, no memory message): AutoGen's default.
    full = sum((b.tokens if b.closed else counter(b.render_messages())) for b in blocks)
    compacted = sum(1 for b in blocks if b.compacted)
    stats = ViewStats(
        full_tokens=full,
        view_tokens=counter(view) if view else 0,
        blocks=len(blocks),
        compacted_blocks=compacted,
        digest_lines=digest_lines,
        omitted_mementos=omitted,
        truncated_blocks=truncated,
        hard=hard,
        newly_compacted=compacted - compacted_before,
    )
    return view, stats
