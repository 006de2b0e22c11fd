"""Settings of the annotation pipeline and the reasoning-trace input record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..chat_format import split_think
from ._llm import Pricing


class PipelineConfig(BaseModel):
    """Settings of the annotation pipeline (defaults follow the published recipe)."""

    model_config = ConfigDict(extra="forbid")

    min_unit_tokens: int = Field(default=5, ge=0, description="atomic units under this many tokens merge")
    window: int = Field(default=16, ge=2, description="units per boundary-scoring request")
    second_window: int | None = Field(default=11, ge=2, description="window of the optional second pass")
    two_pass: bool = Field(default=False, description="score every boundary twice (windows 16 and 11), averaged")
    lam: float = Field(default=0.5, ge=0, description="weight of the CV penalty in the segmentation")
    min_block_tokens: int = Field(default=200, ge=0)
    max_block_tokens: int | None = Field(default=None, ge=1)
    tau: float = Field(default=8.0, ge=0, le=10, description="judge pass threshold out of 10")
    rounds: int = Field(default=2, ge=1, description="judge rounds T (compress → judge, then rewrite → judge …)")
    compress_batch_tokens: int = Field(default=12000, ge=1, description="block tokens per compression request")
    unit_prompt_chars: int = Field(default=600, ge=50, description="units are cut to this in scoring prompts")
    problem_prompt_chars: int = Field(default=2000, ge=0)
    concurrency: int = Field(default=8, ge=1, description="LLM requests in flight")
    max_retries: int = Field(default=4, ge=0)
    backoff_base: float = Field(default=1.0, ge=0)
    backoff_max: float = Field(default=30.0, ge=0)
    pricing: Pricing = Field(default_factory=Pricing)


class ReasoningSample(BaseModel):
    """An input reasoning trace. ``reasoning`` may be given as ``response`` with a ``<think>…</think>`` part."""

    model_config = ConfigDict(extra="ignore")

    id: str
    problem: str = ""
    reasoning: str
    answer: str = ""
    domain: str | None = None
    source: str | None = None

    @classmethod
    def from_record(cls, rec: Mapping[str, Any], default_id: str) -> ReasoningSample:
        """Accept ``reasoning``/``trace``/``thinking`` or a ``response`` holding ``<think>…</think>answer``."""
        data = dict(rec)
        data.setdefault("id", default_id)
        data["id"] = str(data["id"])
        if "reasoning" not in data:
            for k in ("trace", "thinking"):
                if k in data:
                    data["reasoning"] = data[k]
                    break
        if "reasoning" not in data and "response" in data:
            resp = str(data["response"])
            parts = split_think(resp)
            if parts is not None:
                data["reasoning"] = parts[0]
                data.setdefault("answer", parts[1].strip())
            else:
                data["reasoning"] = resp
        if "problem" not in data:
            data["problem"] = data.get("question", data.get("prompt", ""))
        return cls.model_validate(data)
