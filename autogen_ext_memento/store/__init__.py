"""Append-only stores of verbatim blocks (in memory or SQLite) and the ``recall_block`` tool."""

from ._recall import RECALL_DESCRIPTION, make_recall_tool
from ._store import (
    BlockStore,
    InMemoryBlockStore,
    InMemoryBlockStoreConfig,
    SQLiteBlockStore,
    SQLiteBlockStoreConfig,
    StoredBlock,
    dumps_messages,
    loads_messages,
    stored_text,
)

__all__ = [
    "RECALL_DESCRIPTION",
    "BlockStore",
    "InMemoryBlockStore",
    "InMemoryBlockStoreConfig",
    "SQLiteBlockStore",
    "SQLiteBlockStoreConfig",
    "StoredBlock",
    "dumps_messages",
    "loads_messages",
    "make_recall_tool",
    "stored_text",
]
