"""Sawtooth model contexts: blocks, memento writers, the compaction policy and ``MementoChatCompletionContext``."""

from ._blocks import Block, BlockBuilder, BlockKind, TokenCounter, approx_tokens, build_blocks, message_text
from ._compactor import DIGEST_HEADER, DIGEST_SOURCE, compact, memento_line
from ._context import STATE_VERSION, MementoChatCompletionContext, MementoChatCompletionContextConfig
from ._ledger import BlockLedger, BlockLedgerConfig, client_counter
from ._policy import (
    CompactionPolicy,
    MementoCompactionEvent,
    MementoSystemOverBudgetEvent,
    ViewStats,
    leading_system_blocks,
    log_compaction,
)
from ._writers import (
    COMPRESSION_PROMPT,
    JUDGE_PROMPT,
    ClosureMementoWriter,
    ClosureMementoWriterConfig,
    LLMMementoWriter,
    LLMMementoWriterConfig,
    MementoWriter,
    ObservationMaskingWriter,
    ObservationMaskingWriterConfig,
    mask_block,
)

__all__ = [
    "COMPRESSION_PROMPT",
    "DIGEST_HEADER",
    "DIGEST_SOURCE",
    "JUDGE_PROMPT",
    "STATE_VERSION",
    "Block",
    "BlockBuilder",
    "BlockLedger",
    "BlockLedgerConfig",
    "BlockKind",
    "ClosureMementoWriter",
    "ClosureMementoWriterConfig",
    "CompactionPolicy",
    "LLMMementoWriter",
    "LLMMementoWriterConfig",
    "MementoChatCompletionContext",
    "MementoCompactionEvent",
    "MementoChatCompletionContextConfig",
    "MementoSystemOverBudgetEvent",
    "MementoWriter",
    "ObservationMaskingWriter",
    "ObservationMaskingWriterConfig",
    "TokenCounter",
    "ViewStats",
    "approx_tokens",
    "build_blocks",
    "client_counter",
    "compact",
    "leading_system_blocks",
    "log_compaction",
    "mask_block",
    "memento_line",
    "message_text",
]
