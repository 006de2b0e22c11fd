"""autogen-ext-memento: a sawtooth (memento) context for AutoGen agents and teams."""

from ._events import MementoCallEvent, MementoMalformedOutputEvent, MementoSessionRebuildEvent
from ._tokens import REQUIRED_TOKENS, add_memento_tokens, missing_tokens
from .assets import tiny_full_model_path, tiny_model_path
from .backends import (
    GenerationResult,
    MementoBackend,
    SamplingParams,
    SessionStats,
    TransformersBackend,
    TransformersBackendConfig,
    VLLMBackend,
    VLLMBackendConfig,
)
from .client import DEFAULT_MODEL_INFO, MementoChatCompletionClient, MementoChatCompletionClientConfig
from .context import ClosureMementoWriter, LLMMementoWriter, MementoChatCompletionContext, ObservationMaskingWriter
from .grammar import BlockTracker, MementoConfig, MementoTokenIds
from .memory import MementoMemory
from .store import InMemoryBlockStore, SQLiteBlockStore, make_recall_tool
from .wrapping import MementoContextClient

__all__ = [
    "DEFAULT_MODEL_INFO",
    "MementoCallEvent",
    "MementoChatCompletionClient",
    "MementoChatCompletionClientConfig",
    "MementoMalformedOutputEvent",
    "MementoSessionRebuildEvent",
    "REQUIRED_TOKENS",
    "BlockTracker",
    "GenerationResult",
    "MementoBackend",
    "MementoConfig",
    "MementoTokenIds",
    "SamplingParams",
    "SessionStats",
    "TransformersBackend",
    "TransformersBackendConfig",
    "VLLMBackend",
    "VLLMBackendConfig",
    "add_memento_tokens",
    "missing_tokens",
    "ClosureMementoWriter",
    "InMemoryBlockStore",
    "LLMMementoWriter",
    "MementoChatCompletionContext",
    "MementoContextClient",
    "MementoMemory",
    "ObservationMaskingWriter",
    "SQLiteBlockStore",
    "make_recall_tool",
    "tiny_full_model_path",
    "tiny_model_path",
]
