"""The shipped tiny memento model (fixed goal keys; the twins of ``autogen-memento train --preset tiny-twins`` are not
shipped yet): it loads, solves held-out episodes through the client with physical eviction, and its logits under the
stage-2 training mask equal its logits under physical KV eviction."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from autogen_ext_memento.assets import tiny_model_path
from autogen_ext_memento.grammar import (
    MementoConfig,
    MementoTokenIds,
    build_visibility,
    evictions,
    visibility_to_additive,
)
from autogen_ext_memento.tasks import FactTrackerConfig, FactTrackerEnv, sample_episodes, score_answer

HELD_OUT_SEED = 777_001  # training draws from seeds 1000+s and 2000+s with other generators; probes use 99_999
N_EPISODES = 100  # 20 was too small a sample for a 90% bar (measured 16/20 there, 96/100 on the same seed)


@pytest.fixture(scope="module")
def tiny_path() -> Path:
    try:
        return tiny_model_path()
    except FileNotFoundError as e:  # pragma: no cover - the model is committed
        pytest.fail(str(e))


def test_shipped_model_is_small_and_complete(tiny_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(tiny_path)
    assert cfg.model_type == "qwen3"
    assert all(t == "full_attention" for t in (cfg.layer_types or ["full_attention"]))
    size = sum(f.stat().st_size for f in tiny_path.iterdir() if f.is_file())
    assert size < 10 * 1024 * 1024
    assert (tiny_path / "README.md").is_file()
    tok = AutoTokenizer.from_pretrained(tiny_path)
    MementoTokenIds.from_tokenizer(tok)
    assert tok.eos_token == "<|im_end|>"
    text = '<tool_call>\n{"name": "read", "arguments": {"cursor": 7}}\n</tool_call>'
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_base_twin_is_not_shipped_yet_and_says_how_to_get_it() -> None:
    from autogen_ext_memento.assets import tiny_full_model_path

    with pytest.raises(FileNotFoundError, match="tiny-twins"):
        tiny_full_model_path()


@dataclass
class _Run:
    exact: list[bool]
    followed_cursors: list[bool]
    answered: list[bool]
    evictions: int
    peak: list[int]
    full: list[int]


@pytest.fixture(scope="module")
def client_runs(tiny_path: Path) -> _Run:
    """Held-out 2-3 page episodes, each run by an AssistantAgent with a real FunctionTool through the client."""
    from autogen_agentchat.agents import AssistantAgent

    from autogen_ext_memento import MementoChatCompletionClient, TransformersBackend
    from autogen_ext_memento.tasks import SYSTEM_PROMPT

    backend = TransformersBackend(str(tiny_path), memento=MementoConfig(keep_last_n_blocks=0), num_threads=1)
    client = MementoChatCompletionClient(backend, max_new_tokens=48, max_memento_tokens=48)
    episodes = sample_episodes(N_EPISODES, HELD_OUT_SEED, FactTrackerConfig(min_pages=2, max_pages=3))
    run = _Run([], [], [], 0, [], [])

    async def play() -> None:
        for ep in episodes:
            env = FactTrackerEnv(ep)
            agent = AssistantAgent(
                "tracker",
                model_client=client,
                tools=[env.tool()],
                system_message=SYSTEM_PROMPT,
                max_tool_iterations=len(ep.pages) + 2,
            )
            result = await agent.run(task=ep.goal_text)
            answer = result.messages[-1].to_text()
            run.exact.append(score_answer(ep, answer)[0])
            run.answered.append(answer.startswith("answer: "))
            run.followed_cursors.append(env.calls == [p.cursor for p in ep.pages])
            stats = client.session_stats()
            assert stats is not None
            run.evictions += stats.evictions
            run.peak.append(stats.peak_kv_tokens)
            run.full.append(stats.full_context_kv_tokens)
            backend.close_session(client.last_session_id or "default")

    asyncio.run(play())
    return run


def test_shipped_model_drives_an_agent_through_the_client(client_runs: _Run) -> None:
    """The trained format: tool calls that follow the cursor chain, a memento per page, a final answer, eviction."""
    n = len(client_runs.exact)
    assert sum(client_runs.followed_cursors) / n >= 0.9
    assert sum(client_runs.answered) / n >= 0.9
    assert client_runs.evictions >= 2 * n  # every page's block was physically evicted
    assert all(p < f for p, f in zip(client_runs.peak, client_runs.full, strict=True))


def test_shipped_model_solves_held_out_episodes(client_runs: _Run) -> None:
    """The issue's target: >= 90% exact answers on held-out short episodes in memento mode, through the client."""
    solved = sum(client_runs.exact)
    assert solved / len(client_runs.exact) >= 0.9, f"solved {solved}/{len(client_runs.exact)}"


def test_stage2_mask_logits_equal_physical_eviction(tiny_path: Path) -> None:
    """Teacher-forced: a full forward under the stage-2 mask gives the logits the backend gives after evicting."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autogen_ext_memento import TransformersBackend
    from autogen_ext_memento.training import encode_episode

    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path, attn_implementation="sdpa").eval()
    ep = sample_episodes(1, HELD_OUT_SEED + 1, FactTrackerConfig().with_pages(4))[0]
    ids = encode_episode(ep, tok).input_ids
    mids = MementoTokenIds.from_tokenizer(tok)
    cfg = MementoConfig(keep_last_n_blocks=0)
    mask = visibility_to_additive(build_visibility(ids, mids, cfg, stage=2))[None, None]
    with torch.no_grad():
        full = model(
            input_ids=torch.tensor([ids]), position_ids=torch.arange(len(ids))[None], attention_mask=mask
        ).logits[0]
    triggers = [e.trigger for e in evictions(ids, mids, cfg)]
    assert len(triggers) == 4
    backend = TransformersBackend(model, tok, memento=cfg)
    # check right after each eviction and at the end: every prefix extends the session incrementally
    cuts = sorted({t + 2 for t in triggers} | {t + 9 for t in triggers} | {len(ids)})
    worst = 0.0
    for k in cuts:
        got = backend.next_token_logits("oracle", ids[:k])
        worst = max(worst, (got - full[k - 1]).abs().max().item())
    stats = backend.stats("oracle")
    assert stats is not None and stats.evictions == 4 and stats.rebuilds == 0
    assert worst < 1e-4, worst
    # and the kept cache really is smaller than the sequence
    assert stats.live_kv_tokens < len(ids) / 2


def test_training_log_reports_the_recipe(tiny_path: Path) -> None:
    log = json.loads((tiny_path / "training_log.json").read_text())
    assert log["stage1_steps"] > 0 and log["stage2_steps"] > 0
    assert 500_000 <= log["parameters"] <= 3_000_000
    assert log["curve"], "learning curve missing"
