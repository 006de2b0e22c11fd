"""The base of this package's self-contained model clients: model info and usage accounting."""

from __future__ import annotations

import warnings

from autogen_core.models import ChatCompletionClient, ModelCapabilities, ModelInfo, RequestUsage


class LocalChatCompletionClient(ChatCompletionClient):
    """A ``ChatCompletionClient`` that answers by itself: it keeps its model info and counts its own usage.

    Subclasses call :meth:`_account` with each result's usage.
    """

    def __init__(self, model_info: ModelInfo) -> None:
        self._model_info = model_info
        self._cur_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

    def _account(self, usage: RequestUsage) -> None:
        """Count one call's usage (what :meth:`actual_usage` and :meth:`total_usage` report)."""
        self._cur_usage = usage
        self._total_usage = RequestUsage(
            prompt_tokens=self._total_usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total_usage.completion_tokens + usage.completion_tokens,
        )

    def actual_usage(self) -> RequestUsage:
        return self._cur_usage

    def total_usage(self) -> RequestUsage:
        return self._total_usage

    @property
    def capabilities(self) -> ModelCapabilities:
        warnings.warn("capabilities is deprecated, use model_info instead", DeprecationWarning, stacklevel=2)
        return self._model_info

    @property
    def model_info(self) -> ModelInfo:
        return self._model_info
