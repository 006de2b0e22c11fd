"""The shipped twins: they load, each solves held-out episodes in its own mode through AssistantAgent and the client,
and the memento twin's logits under the stage-2 training mask equal its logits under physical KV eviction."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from autogen_ext_memento.assets import tiny_full_model_path, tiny_model_path
from autogen_ext_memento.grammar import (
    MementoConfig,
    MementoTokenIds,
    build_visibility,
    evictions,
    visibility_to_additive,
)
from autogen_ext_memento.tasks import FactTrackerConfig, FactTrackerEnv, sample_episodes, score_answer, task_words

HELD_OUT_SEED = 777_001  # the recipe draws its episodes from seeds 500-2999; probes use 99_999
N_EPISODES = 100
TWIN_PATHS = {"memento": tiny_model_path, "full": tiny_full_model_path}


@pytest.fixture(scope="module", params=["memento", "full"])
def twin(request: pytest.FixtureRequest) -> tuple[str, Path]:
    try:
        return request.param, TWIN_PATHS[request.param]()
    except FileNotFoundError as e:  # pragma: no cover - the models are committed
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def tiny_path() -> Path:
    return tiny_model_path()


def test_shipped_twins_are_small_complete_and_share_a_word_level_tokenizer(twin: tuple[str, Path]) -> None:
    from transformers import AutoConfig, AutoTokenizer

    _, path = twin
    cfg = AutoConfig.from_pretrained(path)
    assert cfg.model_type == "qwen3"
    assert all(t == "full_attention" for t in (cfg.layer_types or ["full_attention"]))
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    assert size < 10 * 1024 * 1024
    assert (path / "README.md").is_file()
    tok = AutoTokenizer.from_pretrained(path)
    MementoTokenIds.from_tokenizer(tok)
    assert tok.eos_token == "<|im_end|>"
    text = '<tool_call>\n{"name": "read", "arguments": {"cursor": 7}}\n</tool_call>'
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    for word in task_words():  # every task word is one token, so copying a key is a one-token copy
        assert len(tok.encode(word, add_special_tokens=False)) == 1, word
    other = AutoTokenizer.from_pretrained(tiny_full_model_path() if twin[0] == "memento" else tiny_model_path())
    assert tok.get_vocab() == other.get_vocab()


@dataclass
class _Run:
    kind: str
    exact: list[bool]
    followed_cursors: list[bool]
    answered: list[bool]
    evictions: int
    peak: list[int]
    full: list[int]


@pytest.fixture(scope="module")
def client_runs(twin: tuple[str, Path]) -> _Run:
    """Held-out episodes of the training range (1-5 pages, random goal keys), each run by an AssistantAgent with a
    real FunctionTool through the client, on the twin's own mode (memento: eviction; full: full context)."""
    from autogen_agentchat.agents import AssistantAgent

    from autogen_ext_memento import MementoChatCompletionClient, TransformersBackend
    from autogen_ext_memento.tasks import SYSTEM_PROMPT

    kind, path = twin
    cfg = MementoConfig(keep_last_n_blocks=0 if kind == "memento" else -1)
    backend = TransformersBackend(str(path), memento=cfg, num_threads=1)
    client = MementoChatCompletionClient(backend, max_new_tokens=48, max_memento_tokens=48)
    episodes = sample_episodes(N_EPISODES, HELD_OUT_SEED, FactTrackerConfig())
    run = _Run(kind, [], [], [], 0, [], [])

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


def test_shipped_twin_drives_an_agent_through_the_client(client_runs: _Run) -> None:
    """The trained format: tool calls that follow the cursor chain, a memento per page, a final answer; the memento
    twin evicts every block, the base twin never does."""
    n = len(client_runs.exact)
    assert sum(client_runs.followed_cursors) / n >= 0.9
    assert sum(client_runs.answered) / n >= 0.9
    if client_runs.kind == "memento":
        assert client_runs.evictions >= n  # every page's block was physically evicted
        assert all(p < f for p, f in zip(client_runs.peak, client_runs.full, strict=True))
    else:
        assert client_runs.evictions == 0
        assert client_runs.peak == client_runs.full


def test_shipped_twin_solves_held_out_episodes(client_runs: _Run) -> None:
    """The issue's target: >= 90% exact answers on held-out episodes of the training range, each twin in its mode."""
    solved = sum(client_runs.exact)
    assert solved / len(client_runs.exact) >= 0.9, f"{client_runs.kind}: solved {solved}/{len(client_runs.exact)}"


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


def test_training_logs_report_one_shared_recipe() -> None:
    logs = {k: json.loads((f() / "training_log.json").read_text()) for k, f in TWIN_PATHS.items()}
    assert logs["full"]["stage1"] == logs["memento"]["stage1"]  # one shared stage 1
    assert logs["full"]["recipe"] == logs["memento"]["recipe"]
    s2 = {k: v["stage2"] for k, v in logs.items()}
    assert s2["full"]["mask"] == "causal" and s2["memento"]["mask"] == "memento"
    assert s2["full"]["steps"] == s2["memento"]["steps"] > 0
    assert s2["full"]["data_seed"] == s2["memento"]["data_seed"]  # the same data stream
    assert 500_000 <= logs["memento"]["parameters"] <= 5_000_000
    assert s2["memento"]["probes"], "learning curve missing"
