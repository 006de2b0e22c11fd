"""The memento rule's vocabulary and settings: the four token strings, their ids and :class:`MementoConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

BLOCK_START = "<|block_start|>"
BLOCK_END = "<|block_end|>"
SUMMARY_START = "<|summary_start|>"
SUMMARY_END = "<|summary_end|>"
SPECIAL_TOKENS: tuple[str, str, str, str] = (BLOCK_START, BLOCK_END, SUMMARY_START, SUMMARY_END)


class MementoConfig(BaseModel):
    """Configuration of the memento rule, shared by training, inference and serving.

    Args:
        mask_delimiters: evict the ``<|block_start|>``/``<|block_end|>`` delimiters with the block content
            (``True`` for Phi-4) or keep them visible (``False`` for Qwen3 and OLMo 3).
        keep_last_n_blocks: how many completed blocks stay visible after their memento; ``0`` evicts each block as
            soon as its memento completes; ``-1`` never evicts (stage-1 full attention, the full-context baseline).
        max_block_tokens: cap on the content length of a generated block; the backend forces ``<|block_end|>``.
        restart_mode: ablation: after eviction, recompute each memento's KV from its text without its block
            (discarding the "dual stream" carried by the memento KV).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mask_delimiters: bool = False
    keep_last_n_blocks: int = Field(default=0, ge=-1)
    max_block_tokens: int | None = Field(default=None, ge=1)
    restart_mode: bool = False

    @property
    def evicts(self) -> bool:
        """Whether blocks are ever evicted under this configuration."""
        return self.keep_last_n_blocks >= 0


class _TokenizerLike(Protocol):
    def convert_tokens_to_ids(self, tokens: str) -> Any: ...


@dataclass(frozen=True)
class MementoTokenIds:
    """The ids of the four memento tokens in one vocabulary."""

    block_start: int
    block_end: int
    summary_start: int
    summary_end: int

    @classmethod
    def from_tokenizer(cls, tokenizer: _TokenizerLike) -> MementoTokenIds:
        """Look the four tokens up in a tokenizer; raise :class:`ValueError` naming any that is missing."""
        ids: list[int] = []
        unk = getattr(tokenizer, "unk_token_id", None)
        for tok in SPECIAL_TOKENS:
            tid = tokenizer.convert_tokens_to_ids(tok)
            if not isinstance(tid, int) or tid < 0 or (unk is not None and tid == unk):
                raise ValueError(
                    f"tokenizer has no token {tok!r}; add the memento tokens first "
                    "(autogen_ext_memento.add_memento_tokens)"
                )
            ids.append(tid)
        if len(set(ids)) != 4:
            raise ValueError(f"memento tokens must have four distinct ids, got {ids}")
        return cls(*ids)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.block_start, self.block_end, self.summary_start, self.summary_end)
