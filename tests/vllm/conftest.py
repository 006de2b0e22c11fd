"""Fixtures of the vLLM plugin tests (defined in ``_vllm_helpers``; nothing here imports vLLM)."""

from _vllm_helpers import engine, reference, vllm_model_dir

__all__ = ["engine", "reference", "vllm_model_dir"]
