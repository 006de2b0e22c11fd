"""Twin tiny models by one recipe: ``tiny_full`` (the base, causal attention) and ``tiny_memento`` (its memento fine-tune).

Both twins share a word-level tokenizer (every task word one token), one architecture, one stage 1 (causal, on the
fact tracker) and then the same data stream, seeds and step count in stage 2: ``tiny_full`` keeps training with
causal attention, ``tiny_memento`` trains under the grammar's memento mask. This is the paper's base-vs-memento
comparison at toy scale, so every baseline runs on a model that works in its own mode.

``autogen-memento train --preset tiny-twins --out DIR`` (or ``scripts/train_tiny.sh``) runs it on CPU.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..chat_format import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, TOOL_RESPONSE_CLOSE, TOOL_RESPONSE_OPEN, TurnEncoder
from ..grammar import MementoConfig, MementoTokenIds
from ..tasks import (
    HONEST_TASK,
    Episode,
    FactTrackerConfig,
    corpus,
    episode_messages,
    sample_episodes,
    task_words,
    tool_schema_tool,
)
from ._collator import IGNORE_INDEX, MASK_KEY, MementoCollator
from ._data import TokenizedSample, encode_messages, samples_dataset
from ._presets import PRESETS, TrainingPreset
from ._trainer import load_model_and_tokenizer, train_stage
from ._warmup import bare_dataset

logger = logging.getLogger(__name__)

Twin = Literal["full", "memento"]
TWINS: tuple[Twin, ...] = ("full", "memento")
TWIN_DIRS: dict[Twin, str] = {"full": "tiny_full", "memento": "tiny_memento"}
TOOL_TAGS: tuple[str, ...] = (TOOL_CALL_OPEN, TOOL_CALL_CLOSE, TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE)
TINY_ARCH: dict[str, Any] = {
    "hidden_size": 128,
    "layers": 4,
    "heads": 4,
    "kv_heads": 2,
    "head_dim": 32,
    "intermediate_size": 384,
    "max_position_embeddings": 8192,
}
TASK = HONEST_TASK
"""The training task of both twins: 2-3 random goal keys of 16, 6-9 facts a page, 1-5 pages."""
WARMUP_TASK = TASK.model_copy(
    update={"min_pages": 2, "max_pages": 6, "facts_per_page": 5, "min_facts_per_page": 2, "goal_fact_prob": 0.4}
)
"""Stage 1's warm-up task (bare episodes, see :mod:`._warmup`): many short pages, so copy events come densely."""
EASY_TASK = TASK.model_copy(
    update={"max_pages": 3, "facts_per_page": 4, "min_facts_per_page": 2, "goal_fact_prob": 0.5}
)
"""Stage 1's opening curriculum (shared by both twins): short episodes whose short pages often name a goal key, so
the copy and look-up skills get dense, cheap signal before the full task (a third of the tokens per memento)."""


class TwinsRecipe(BaseModel):
    """Settings of the twin recipe (the defaults produced the seed-0 twins measured in the README).

    Args:
        seed: model initialisation and data seed.
        warmup_steps: the most causal steps on bare :data:`WARMUP_TASK` episodes (no chat wrapper) at the start of
            stage 1 (constant learning rate after warmup).
        warmup_until: the warm-up ends early at the first probe whose teacher-forced causal exactness on held-out
            bare episodes reaches this share: the copy skill has appeared.
        curriculum_steps: the most causal steps on :data:`EASY_TASK` at the start of stage 1 (constant learning
            rate after warmup).
        curriculum_until: the curriculum ends early at the first probe whose teacher-forced causal exactness on
            held-out curriculum episodes reaches this share: the copy skill has appeared.
        stage1_steps: causal steps on :data:`TASK` after the curriculum (both shared by the twins).
        stage2_steps: steps of each twin's second stage (causal for ``tiny_full``, memento mask for
            ``tiny_memento``), on the same data stream.
        batch_size: episodes per step.
        learning_rate: peak learning rate of every stage (5% warmup, cosine to 10%).
        threads: torch CPU threads for stage 1 (each twin gets ``max(1, threads // jobs)``).
        jobs: twins trained at once in stage 2 (1 or 2 processes).
        probe_every: steps between learning-curve probes (teacher-forced exactness on held-out episodes).
        position_gap: length augmentation in every phase: each block's positions end with a random gap of up to
            this many positions, as if the block had been longer (0: off).
        stage2_position_gap: the gap of both twins' stage 2 (``None``: ``position_gap``; 0 turns it off there).
        memento_causal_share: the share of ``tiny_memento``'s stage-2 samples trained causally (the rest under the
            memento mask), so the memento twin also reads full context; ``tiny_full`` is causal throughout anyway.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, ge=0)
    warmup_steps: int = Field(default=1500, ge=0)
    warmup_until: float = Field(default=0.5, gt=0.0, le=1.0)
    curriculum_steps: int = Field(default=0, ge=0)
    curriculum_until: float = Field(default=0.5, gt=0.0, le=1.0)
    stage1_steps: int = Field(default=300, ge=1)
    stage2_steps: int = Field(default=200, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=1.5e-3, gt=0.0, lt=1.0)
    threads: int = Field(default=1, ge=1)
    jobs: int = Field(default=2, ge=1, le=2)
    probe_every: int = Field(default=100, ge=1)
    position_gap: int = Field(default=100, ge=0)
    stage2_position_gap: int | None = Field(default=None, ge=0)
    memento_causal_share: float = Field(default=0.5, ge=0.0, le=1.0)

    def preset(self) -> TrainingPreset:
        """The ``tiny`` training preset with this recipe's seed, batch and learning rate."""
        return PRESETS["tiny"].model_copy(
            update={
                "seed": self.seed,
                "per_device_batch_size": self.batch_size,
                "global_batch_size": self.batch_size,
                "learning_rate": self.learning_rate,
            }
        )


def build_task_tokenizer(seed: int = 1234, vocab_size: int = 2000) -> Any:
    """Byte-level BPE on rendered episodes (merges across words), every task word a whole token, the tool tags tokens.

    ``<|im_end|>`` is the end-of-turn ``eos`` (as in Qwen3 chat tokenizers); ``<|endoftext|>`` pads.
    """
    from .._tiny import build_tokenizer

    eps = sample_episodes(400, seed, TASK.model_copy(update={"max_pages": 12}))
    tok = build_tokenizer(
        corpus(eps), vocab_size=vocab_size, extra_special=TOOL_TAGS, words=task_words(), cross_word=True
    )
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    return tok


def finalize_model_config(model: Any, tokenizer: Any) -> None:
    """Align the model's and generation config's special ids with the tokenizer (TRL resets them to the tokenizer's)."""
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.bos_token_id = None


def encode_episode(episode: Episode, tokenizer: Any, encoder: TurnEncoder | None = None) -> TokenizedSample:
    """One episode as a labelled sample in the agent chat format."""
    return encode_messages(episode_messages(episode), tokenizer, [tool_schema_tool()], encoder)


def episode_dataset(tokenizer: Any, n: int, seed: int, config: FactTrackerConfig = TASK) -> Any:
    """``n`` seeded episodes as a ``datasets.Dataset`` of ``input_ids``/``labels``."""
    enc = TurnEncoder(tokenizer)
    return samples_dataset([encode_episode(e, tokenizer, enc) for e in sample_episodes(n, seed, config)])


def teacher_forced_exact(model: Any, batch: dict[str, Any]) -> tuple[float, float]:
    """``(sample_exact, token_acc)``: share of samples whose every labelled token is the argmax, and token accuracy."""
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=batch[MASK_KEY].to(next(model.parameters()).dtype),
            use_cache=False,
        )
    if was_training:
        model.train()
    pred = out.logits[:, :-1].argmax(-1)
    lab = batch["labels"][:, 1:]
    valid = lab != IGNORE_INDEX
    right = (pred == lab) | ~valid
    sample = right.all(-1).float().mean().item()
    tok = ((pred == lab) & valid).sum().item() / max(1, int(valid.sum().item()))
    return sample, tok


def probe_batches(tok: Any, task: FactTrackerConfig = TASK, bare: bool = False) -> dict[str, dict[str, Any]]:
    """32 held-out episodes (seed 99999; ``bare``: without the chat wrapper) collated under the causal and the
    memento mask (learning-curve probes)."""
    ids = MementoTokenIds.from_tokenizer(tok)
    held = (bare_dataset if bare else episode_dataset)(tok, 32, 99_999, task)
    rows = [held[i] for i in range(len(held))]
    return {
        "causal": MementoCollator(ids, stage=1, pad_token_id=tok.pad_token_id)(rows),
        "memento": MementoCollator(ids, stage=2, config=MementoConfig(), pad_token_id=tok.pad_token_id)(rows),
    }


def _callbacks(
    probes: dict[str, dict[str, Any]],
    every: int,
    phase: str,
    history: list[dict[str, Any]],
    position: int,
    until: float | None = None,
) -> list[Any]:
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):  # type: ignore[misc]
        """A tqdm bar per phase (stderr) and the learning curve: teacher-forced exactness under both masks."""

        bar: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar = tqdm(total=state.max_steps, desc=phase, position=position, leave=True, dynamic_ncols=True)

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            self.bar.update(1)
            if model is None or (state.global_step % every and state.global_step != state.max_steps):
                return
            row: dict[str, Any] = {"phase": phase, "step": state.global_step}
            for name, batch in probes.items():
                row[f"{name}_exact"], row[f"{name}_token_acc"] = teacher_forced_exact(model, batch)
            losses = [h["loss"] for h in state.log_history if "loss" in h]
            row["loss"] = losses[-1] if losses else None
            history.append(row)
            self.bar.set_postfix(loss=row["loss"], tf_causal=row["causal_exact"], tf_memento=row["memento_exact"])
            tqdm.write(json.dumps(row), file=sys.stderr)
            if until is not None and row["causal_exact"] >= until:
                control.should_training_stop = True

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar.close()

    return [Progress()]


def _phase(
    model: Any,
    tok: Any,
    *,
    phase: str,
    mask_stage: int,
    steps: int,
    data_seed: int,
    recipe: TwinsRecipe,
    work: Path,
    position: int,
    task: FactTrackerConfig = TASK,
    until: float | None = None,
    bare: bool = False,
    position_gap: int = 0,
    causal_share: float = 0.0,
) -> tuple[Any, Any, dict[str, Any]]:
    """One training phase on fresh seeded episodes; returns the model, tokenizer and the phase's log.

    With ``until``, the learning rate stays constant after warmup and the phase stops at the first probe whose
    teacher-forced causal exactness (on held-out episodes of ``task``) reaches ``until``.
    """
    preset = recipe.preset().model_copy(update={"max_position_gap": position_gap, "causal_share": causal_share})
    if until is not None:
        preset = preset.model_copy(update={"lr_scheduler_type": "constant_with_warmup"})
    data = (bare_dataset if bare else episode_dataset)(tok, steps * recipe.batch_size, data_seed, task)
    history: list[dict[str, Any]] = []
    t0, cpu0 = time.time(), time.process_time()
    model, tok, trainer = train_stage(
        model,
        data,
        stage=mask_stage,
        preset=preset,
        output_dir=work / phase,
        tokenizer=tok,
        max_steps=steps,
        callbacks=_callbacks(probe_batches(tok, task, bare), recipe.probe_every, phase, history, position, until),
        disable_tqdm=True,
        resume=False,
        extra_args={"use_cpu": True, "dataloader_pin_memory": False, "save_strategy": "no"},
    )
    losses = [{"phase": phase, "step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    log = {"phase": phase, "steps": trainer.state.global_step, "max_steps": steps, "data_seed": data_seed, "position_gap": position_gap, "causal_share": causal_share,
           "mask": "memento" if mask_stage == 2 else "causal", "wall_s": round(time.time() - t0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
           "probes": history, "losses": losses}  # fmt: skip
    return model, tok, log


def train_stage1(out_dir: str | Path, recipe: TwinsRecipe) -> dict[str, Any]:
    """Tokenizer, initialisation and the shared causal stage 1; saves the checkpoint to ``out_dir``."""
    import torch

    from .._tiny import build_tiny_qwen3

    torch.set_num_threads(recipe.threads)
    out = Path(out_dir)
    tok = build_task_tokenizer()
    model = build_tiny_qwen3(len(tok), seed=recipe.seed, **TINY_ARCH)
    finalize_model_config(model, tok)
    work = out.with_name(out.name + "_work")
    logs = []
    phases = [
        ("stage1-warmup", recipe.warmup_steps, 300, WARMUP_TASK, recipe.warmup_until, True),
        ("stage1-curriculum", recipe.curriculum_steps, 500, EASY_TASK, recipe.curriculum_until, False),
        ("stage1", recipe.stage1_steps, 1000, TASK, None, False),
    ]
    for phase, steps, seed_base, task, until, bare in phases:
        if steps:
            model, tok, log = _phase(
                model, tok, phase=phase, mask_stage=1, steps=steps, data_seed=seed_base + recipe.seed,
                recipe=recipe, work=work, position=0, task=task, until=until, bare=bare,
                position_gap=recipe.position_gap,
            )  # fmt: skip
            logs.append(log)
    finalize_model_config(model, tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {
        "phases": logs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "wall_s": round(sum(x["wall_s"] for x in logs), 1),
        "cpu_s": round(sum(x["cpu_s"] for x in logs), 1),
    }


def train_twin(
    twin: Twin, stage1_dir: str | Path, out_dir: str | Path, recipe: TwinsRecipe, position: int = 0
) -> dict[str, Any]:
    """A twin's stage 2 from the stage-1 checkpoint: same data stream for both, causal or memento mask."""
    import torch

    torch.set_num_threads(max(1, recipe.threads // recipe.jobs))
    model, tok = load_model_and_tokenizer(str(stage1_dir))
    out = Path(out_dir)
    model, tok, log = _phase(
        model,
        tok,
        phase=f"stage2-{twin}",
        mask_stage=2 if twin == "memento" else 1,
        steps=recipe.stage2_steps,
        data_seed=2000 + recipe.seed,
        recipe=recipe,
        work=out.with_name(out.name + "_work"),
        position=position,
        position_gap=recipe.position_gap if recipe.stage2_position_gap is None else recipe.stage2_position_gap,
        causal_share=recipe.memento_causal_share if twin == "memento" else 0.0,
    )
    finalize_model_config(model, tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return log


def _twin_job(args: tuple[Twin, str, str, dict[str, Any], int]) -> dict[str, Any]:
    twin, stage1, out, recipe, position = args
    return train_twin(twin, stage1, out, TwinsRecipe(**recipe), position)


def train_tiny_twins(out_dir: str | Path, recipe: TwinsRecipe | None = None) -> dict[str, Any]:
    """Train both twins into ``out_dir/tiny_full`` and ``out_dir/tiny_memento`` (stage 1 in ``out_dir/stage1``).

    Each twin directory gets a ``training_log.json`` with the shared stage 1 and its own stage 2. Returns the
    summary (also written to ``out_dir/twins_log.json``).
    """
    import shutil

    r = recipe or TwinsRecipe()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    stage1 = train_stage1(out / "stage1", r)
    jobs = [(t, str(out / "stage1"), str(out / TWIN_DIRS[t]), r.model_dump(), i) for i, t in enumerate(TWINS)]
    if r.jobs > 1:
        # Separate processes (spawned: torch and fork do not mix) so each twin gets its own core.
        with ProcessPoolExecutor(max_workers=r.jobs, mp_context=get_context("spawn")) as pool:
            logs = list(pool.map(_twin_job, jobs))
    else:
        logs = [_twin_job(j) for j in jobs]
    summary: dict[str, Any] = {
        "recipe": r.model_dump(), "architecture": TINY_ARCH, "task": TASK.model_dump(),
        "parameters": stage1["parameters"], "wall_s": round(time.time() - t0, 1), "stage1": stage1,
    }  # fmt: skip
    for twin, log in zip(TWINS, logs, strict=True):
        summary[f"stage2_{twin}"] = log
        twin_log = {k: v for k, v in summary.items() if not k.startswith("stage2_")}
        (out / TWIN_DIRS[twin] / "training_log.json").write_text(json.dumps({**twin_log, "stage2": log}, indent=1))
    for work in out.glob("*_work"):
        shutil.rmtree(work, ignore_errors=True)
    (out / "twins_log.json").write_text(json.dumps(summary, indent=1))
    return summary
