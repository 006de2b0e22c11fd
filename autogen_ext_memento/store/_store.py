"""Append-only stores of verbatim blocks: every block a context compacts stays recallable, byte for byte."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from autogen_core import Component, ComponentBase
from autogen_core.models import LLMMessage
from pydantic import BaseModel, Field, TypeAdapter, field_validator
from typing_extensions import Self

from .._checks import build_config
from ..chat_format import transcript

_MESSAGES = TypeAdapter(list[LLMMessage])

STORE_STATE_VERSION = 1


def _load_json(data: str) -> list[LLMMessage]:
    # Parsed first, then validated as Python: pydantic's JSON mode tries ``Image``'s validator on plain strings of a
    # multimodal ``UserMessage`` and it raises ``TypeError`` instead of failing over to ``str``.
    return _MESSAGES.validate_python(json.loads(data))


class StoredBlock(BaseModel):
    """One block as stored: its verbatim messages, who produced it, its memento and token counts."""

    block_id: str
    agent: str
    kind: str
    messages: list[LLMMessage]
    memento: str | None = None
    memento_source: str | None = None
    tokens: int = 0
    memento_tokens: int = 0
    scope: str = ""
    seq: int = 0
    created_at: float = Field(default_factory=time.time)

    def messages_json(self) -> str:
        """The messages serialised exactly as stored (the byte-exact form recall returns)."""
        return _MESSAGES.dump_json(self.messages).decode()


class BlockStore(ABC, ComponentBase[BaseModel]):
    """An append-only store of verbatim blocks.

    ``append`` inserts a block once (a second append with the same id and the same messages is a no-op, with
    different messages it raises); ``set_memento`` records a block's memento once (a later call does not
    overwrite it). Nothing is ever deleted or rewritten.
    """

    component_type = "memento_block_store"

    @abstractmethod
    def append(self, block: StoredBlock) -> bool:
        """Store a block; return ``False`` if an identical block with this id was already stored."""

    @abstractmethod
    def set_memento(self, block_id: str, memento: str, source: str, memento_tokens: int) -> bool:
        """Record the memento of a stored block if it has none yet; return whether it was recorded."""

    @abstractmethod
    def get(self, block_id: str) -> StoredBlock | None:
        """The stored block with this id."""

    @abstractmethod
    def list_blocks(
        self, *, agent: str | None = None, scope: str | None = None, limit: int | None = None
    ) -> list[StoredBlock]:
        """Stored blocks in insertion order, optionally by agent/scope; ``limit`` keeps the most recent."""

    def search(self, text: str, *, agent: str | None = None, limit: int = 10) -> list[StoredBlock]:
        """Most recent blocks whose memento or messages contain every word of ``text`` (case-insensitive)."""
        words = text.lower().split()
        hits = [
            b
            for b in self.list_blocks(agent=agent)
            if all(w in ((b.memento or "") + "\n" + b.messages_json()).lower() for w in words)
        ]
        return hits[-limit:] if limit > 0 else hits

    def __len__(self) -> int:
        return len(self.list_blocks())

    def close(self) -> None:
        """Release resources (a no-op for in-memory stores)."""

    async def save_state(self) -> Mapping[str, Any]:
        """Every stored block (messages byte-exact, memento, counts, insertion time), oldest first; JSON-safe."""
        return {
            "version": STORE_STATE_VERSION,
            "type": "MementoBlockStoreState",
            "blocks": [b.model_dump(mode="json") for b in self.list_blocks()],
        }

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Add the blocks of a :meth:`save_state` state (append-only: blocks already stored identically are kept).

        A block stored here with different messages raises ``ValueError``, as :meth:`append` does; a memento is
        recorded only for a block that has none yet.
        """
        version = int(state.get("version", 0))
        if version > STORE_STATE_VERSION:
            raise ValueError(f"block store state version {version} is newer than supported ({STORE_STATE_VERSION})")
        for raw in state.get("blocks", []):
            block = StoredBlock.model_validate(raw)
            self.append(block.model_copy(update={"memento": None, "memento_source": None, "memento_tokens": 0}))
            if block.memento is not None:
                self.set_memento(block.block_id, block.memento, block.memento_source or "", block.memento_tokens)


class InMemoryBlockStoreConfig(BaseModel):
    """Configuration of :class:`InMemoryBlockStore` (it starts empty)."""


class InMemoryBlockStore(BlockStore, Component[InMemoryBlockStoreConfig]):
    """An append-only block store held in memory (lost with the process)."""

    component_config_schema = InMemoryBlockStoreConfig
    component_provider_override = "autogen_ext_memento.store.InMemoryBlockStore"

    def __init__(self) -> None:
        # Each block is kept with its serialised messages: the JSON is the immutable, byte-exact record, so a caller
        # mutating the message objects it passed in (or got back) cannot change what the store holds.
        self._blocks: dict[str, tuple[StoredBlock, str]] = {}
        self._lock = threading.Lock()

    def append(self, block: StoredBlock) -> bool:
        data = block.messages_json()
        with self._lock:
            old = self._blocks.get(block.block_id)
            if old is not None:
                if old[1] != data:
                    raise ValueError(f"block {block.block_id!r} is already stored with different messages")
                return False
            self._blocks[block.block_id] = (block.model_copy(update={"messages": _load_json(data)}), data)
            return True

    def set_memento(self, block_id: str, memento: str, source: str, memento_tokens: int) -> bool:
        with self._lock:
            old = self._blocks.get(block_id)
            if old is None or old[0].memento is not None:
                return False
            upd = {"memento": memento, "memento_source": source, "memento_tokens": memento_tokens}
            self._blocks[block_id] = (old[0].model_copy(update=upd), old[1])
            return True

    def get(self, block_id: str) -> StoredBlock | None:
        hit = self._blocks.get(block_id)
        if hit is None:
            return None
        return hit[0].model_copy(update={"messages": _load_json(hit[1])})

    def list_blocks(
        self, *, agent: str | None = None, scope: str | None = None, limit: int | None = None
    ) -> list[StoredBlock]:
        """Stored blocks (shared records: read them, do not mutate them; :meth:`get` returns a fresh copy)."""
        out = [
            b
            for b, _ in self._blocks.values()
            if (agent is None or b.agent == agent) and (scope is None or b.scope == scope)
        ]
        return out[-limit:] if limit is not None and limit > 0 else out

    def _to_config(self) -> InMemoryBlockStoreConfig:
        return InMemoryBlockStoreConfig()

    @classmethod
    def _from_config(cls, config: InMemoryBlockStoreConfig) -> Self:
        return cls()


class SQLiteBlockStoreConfig(BaseModel):
    """Configuration of :class:`SQLiteBlockStore`: the database file (its directory must exist) or ``":memory:"``."""

    path: str

    @field_validator("path")
    @classmethod
    def _directory_exists(cls, path: str) -> str:
        if path == ":memory:":
            return path
        if not path:
            raise ValueError("expected a database file path or ':memory:'")
        if os.path.isdir(path):
            raise ValueError(f"{path} is a directory; expected a database file path inside it")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ValueError(f"directory {parent} does not exist; create it first")
        return path


_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    block_id TEXT UNIQUE NOT NULL,
    scope TEXT NOT NULL,
    seq INTEGER NOT NULL,
    agent TEXT NOT NULL,
    kind TEXT NOT NULL,
    messages TEXT NOT NULL,
    memento TEXT,
    memento_source TEXT,
    tokens INTEGER NOT NULL,
    memento_tokens INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS blocks_agent ON blocks(agent);
"""

_COLS = "block_id, scope, seq, agent, kind, messages, memento, memento_source, tokens, memento_tokens, created_at"


class SQLiteBlockStore(BlockStore, Component[SQLiteBlockStoreConfig]):
    """An append-only block store in a SQLite file (stdlib :mod:`sqlite3`); ``":memory:"`` keeps it in memory.

    Several contexts (agents of one team) may share one store; the file survives the process, so blocks evicted
    in one run can be recalled in the next.
    """

    component_config_schema = SQLiteBlockStoreConfig
    component_provider_override = "autogen_ext_memento.store.SQLiteBlockStore"

    def __init__(self, path: str) -> None:
        self._path = build_config(SQLiteBlockStoreConfig, "SQLiteBlockStore", path=path).path
        self._lock = threading.Lock()
        try:
            # One connection shared across threads (AutoGen may call from executor threads), serialised by a lock.
            self._conn = sqlite3.connect(self._path, check_same_thread=False)
            with self._lock, self._conn:
                self._conn.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise ValueError(
                f"SQLiteBlockStore: path={self._path!r}: cannot open a SQLite database there ({e})"
            ) from None

    @property
    def path(self) -> str:
        return self._path

    @staticmethod
    def _row(row: Sequence[Any]) -> StoredBlock:
        return StoredBlock(
            block_id=row[0],
            scope=row[1],
            seq=row[2],
            agent=row[3],
            kind=row[4],
            messages=_load_json(row[5]),
            memento=row[6],
            memento_source=row[7],
            tokens=row[8],
            memento_tokens=row[9],
            created_at=row[10],
        )

    def append(self, block: StoredBlock) -> bool:
        data = block.messages_json()
        with self._lock, self._conn:
            cur = self._conn.execute("SELECT messages FROM blocks WHERE block_id = ?", (block.block_id,))
            old = cur.fetchone()
            if old is not None:
                if old[0] != data:
                    raise ValueError(f"block {block.block_id!r} is already stored with different messages")
                return False
            self._conn.execute(
                f"INSERT INTO blocks ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    block.block_id,
                    block.scope,
                    block.seq,
                    block.agent,
                    block.kind,
                    data,
                    block.memento,
                    block.memento_source,
                    block.tokens,
                    block.memento_tokens,
                    block.created_at,
                ),
            )
            return True

    def set_memento(self, block_id: str, memento: str, source: str, memento_tokens: int) -> bool:
        with self._lock, self._conn:
            cur = self._conn.execute(
                "UPDATE blocks SET memento = ?, memento_source = ?, memento_tokens = ? "
                "WHERE block_id = ? AND memento IS NULL",
                (memento, source, memento_tokens, block_id),
            )
            return cur.rowcount > 0

    def get(self, block_id: str) -> StoredBlock | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLS} FROM blocks WHERE block_id = ?", (block_id,)).fetchone()
        return self._row(row) if row is not None else None

    def list_blocks(
        self, *, agent: str | None = None, scope: str | None = None, limit: int | None = None
    ) -> list[StoredBlock]:
        where: list[str] = []
        args: list[Any] = []
        if agent is not None:
            where.append("agent = ?")
            args.append(agent)
        if scope is not None:
            where.append("scope = ?")
            args.append(scope)
        sql = f"SELECT {_COLS} FROM blocks" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY rowid"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        out = [self._row(r) for r in rows]
        return out[-limit:] if limit is not None and limit > 0 else out

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM blocks").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _to_config(self) -> SQLiteBlockStoreConfig:
        return SQLiteBlockStoreConfig(path=self._path)

    @classmethod
    def _from_config(cls, config: SQLiteBlockStoreConfig) -> Self:
        return cls(config.path)


def stored_text(block: StoredBlock) -> str:
    """A stored block as readable text in the agent chat format (what ``recall_block`` returns)."""
    return transcript(block.messages)


def dumps_messages(messages: Sequence[LLMMessage]) -> str:
    """Serialise messages the way the store does (for byte-exact comparisons)."""
    return _MESSAGES.dump_json(list(messages)).decode()


def loads_messages(data: str) -> list[LLMMessage]:
    """Inverse of :func:`dumps_messages`."""
    return _load_json(data)
