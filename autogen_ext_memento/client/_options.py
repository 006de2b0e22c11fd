"""What a client call may be given: the client's validated options, its component config and per-call sampling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autogen_core import ComponentModel
from autogen_core.models import ModelFamily, ModelInfo
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._checks import validation_message
from ..backends import SamplingParams

DEFAULT_MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=True,
    family=ModelFamily.UNKNOWN,
    structured_output=True,
    multiple_system_messages=True,
)


class SamplingOptions(BaseModel):
    """Sampling rules shared by the constructor, the component config and ``extra_create_args``."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False)
    top_k: int = Field(default=0, ge=0)
    seed: int | None = None


class ClientOptions(SamplingOptions):
    """Everything the constructor validates (the backend is checked by its own Config)."""

    session_id: str | None = None
    max_memento_tokens: int = Field(default=128, ge=1)
    model_info: ModelInfo | None = None


class MementoChatCompletionClientConfig(ClientOptions):
    """Configuration of :class:`MementoChatCompletionClient` (the backend is a nested component)."""

    backend: ComponentModel


SAMPLING_KEYS = frozenset(SamplingOptions.model_fields)


def call_sampling(base: SamplingOptions, extra: Mapping[str, Any], stops: Sequence[int]) -> SamplingParams:
    """A call's sampling parameters: ``base``, overridden by ``extra_create_args`` under the same rules."""
    unknown = set(extra) - SAMPLING_KEYS - {"session_id"}
    if unknown:
        raise ValueError(f"unsupported extra_create_args: {sorted(unknown)}")
    values = {**base.model_dump(), **{k: v for k, v in extra.items() if k in SAMPLING_KEYS}}
    try:
        opts = SamplingOptions.model_validate(values)
    except ValidationError as e:
        raise ValueError(f"invalid extra_create_args: {validation_message(e)}") from None
    return SamplingParams(**opts.model_dump(), stop_token_ids=tuple(stops))
