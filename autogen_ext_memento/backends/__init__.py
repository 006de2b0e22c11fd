"""Memento backends: sessions that hold a conversation's compacted KV."""

from ._base import FinishReason, GenerationResult, MementoBackend, SamplingParams, SessionStats, TokenCallback
from ._base import resolve_model_path as resolve_model_path
from ._transformers import TransformersBackend, TransformersBackendConfig
from ._vllm import VLLMBackend, VLLMBackendConfig, record_server_turn

__all__ = [
    "FinishReason",
    "GenerationResult",
    "MementoBackend",
    "SamplingParams",
    "SessionStats",
    "TokenCallback",
    "TransformersBackend",
    "TransformersBackendConfig",
    "VLLMBackend",
    "VLLMBackendConfig",
    "record_server_turn",
    "resolve_model_path",
]
