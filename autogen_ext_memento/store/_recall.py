"""The ``recall_block`` tool: lets an agent reopen an evicted block by id."""

from __future__ import annotations

from autogen_core.tools import FunctionTool

from ._store import BlockStore, stored_text

RECALL_DESCRIPTION = (
    "Reopen an earlier block of work that was compacted into a memento. "
    "Pass the block id shown in the memento list (e.g. 'a1b2c3-7'); returns the block verbatim."
)


def make_recall_tool(store: BlockStore, *, name: str = "recall_block", max_chars: int | None = None) -> FunctionTool:
    """A :class:`~autogen_core.tools.FunctionTool` that returns a stored block verbatim by id.

    Args:
        store: the block store the agent's context writes to.
        name: the tool name.
        max_chars: cut the returned text to this many characters (``None``: no cut), so one recall cannot
            overflow the context it was called from.
    """

    async def recall_block(block_id: str) -> str:
        """Return an evicted block verbatim by its id."""
        block = store.get(block_id.strip())
        if block is None:
            known = [b.block_id for b in store.list_blocks(limit=5)]
            return f"No block with id {block_id!r}. Recent block ids: {', '.join(known) or 'none'}."
        text = f"[block {block.block_id} by {block.agent}; memento: {block.memento or '-'}]\n{stored_text(block)}"
        if max_chars is not None and len(text) > max_chars:
            text = text[:max_chars] + f"\n[... {len(text) - max_chars} more characters]"
        return text

    return FunctionTool(recall_block, description=RECALL_DESCRIPTION, name=name)
