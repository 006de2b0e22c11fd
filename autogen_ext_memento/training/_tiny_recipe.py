"""The recipe of the shipped fixed-goal tiny memento model: byte-level BPE, architecture and its SFT phases on TRL.

``autogen-memento train --preset tiny --data fact-tracker --stages 1,2 --out DIR`` replays it (deterministic for a
given seed on one machine); the shipped ``autogen_ext_memento/assets/tiny_memento`` was produced by it. The twin
recipe (:mod:`._twins`, ``--preset tiny-twins``) supersedes it once its twins are trained.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from ..chat_format import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, TOOL_RESPONSE_CLOSE, TOOL_RESPONSE_OPEN
from ..tasks import KEYS, FactTrackerConfig, corpus, sample_episodes
from ._presets import PRESETS, TrainingPreset
from ._trainer import train_stage
from ._twins import episode_dataset as _episode_dataset
from ._twins import finalize_model_config, probe_batches, teacher_forced_exact

logger = logging.getLogger(__name__)

TOOL_TAGS: tuple[str, ...] = (TOOL_CALL_OPEN, TOOL_CALL_CLOSE, TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE)
TINY_ARCH: dict[str, Any] = {
    "hidden_size": 128,
    "layers": 4,
    "heads": 4,
    "kv_heads": 2,
    "head_dim": 32,
    "intermediate_size": 256,
    "max_position_embeddings": 8192,
}
RANDOM_GOAL_TASK = FactTrackerConfig(goal=None, min_facts_per_page=4, facts_per_page=8, min_pages=1, max_pages=5)
"""Stages 1, 2 and 2b: 2 random goal keys of 16, 4-8 facts per page, 1-5 pages."""
TASK = RANDOM_GOAL_TASK.model_copy(update={"goal": ("alpha", "bravo")})
"""Stage 2c (the final distribution): the default task's fixed goal keys, 4-8 facts per page, 1-5 pages."""
LOOKUP_TASK = TASK.model_copy(update={"min_facts_per_page": 2, "facts_per_page": 5, "goal_fact_prob": 0.5})
"""Stage 2d: a lookup curriculum (fewer facts, more of them about the goal keys) for the value-copy skill."""
STAGE1_TASK = RANDOM_GOAL_TASK.model_copy(update={"max_pages": 4})
"""Stage 1 learns the per-block skill with full attention on slightly shorter, cheaper episodes (1-4 pages)."""


def build_task_tokenizer(seed: int = 1234, vocab_size: int = 1024) -> Any:
    """Byte-level BPE trained on rendered fact-tracker episodes (keys, values and JSON pieces become single tokens).

    The tool-call and tool-response tags are added as whole tokens, as in Qwen3's vocabulary.
    """
    from .._tiny import build_tokenizer

    eps = sample_episodes(
        400, seed, FactTrackerConfig(goal=None, goal_keys=2, n_keys=len(KEYS), min_pages=1, max_pages=12)
    )
    tok = build_tokenizer(corpus(eps), vocab_size=vocab_size, extra_special=TOOL_TAGS)
    return finalize_tokenizer(tok)


def finalize_tokenizer(tokenizer: Any) -> Any:
    """Make ``<|im_end|>`` the end-of-turn ``eos`` (as in Qwen3 chat tokenizers); ``<|endoftext|>`` pads."""
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def episode_dataset(tokenizer: Any, n: int, seed: int, config: FactTrackerConfig = TASK) -> Any:
    """``n`` seeded episodes of this recipe's task (default: the fixed-goal :data:`TASK`) as a dataset."""
    return _episode_dataset(tokenizer, n, seed, config)


def _probe_callback(
    probes: dict[str, dict[str, Any]], every: int, stage: int, history: list[dict[str, Any]], phase: str = ""
) -> Any:
    from transformers import TrainerCallback

    class Probe(TrainerCallback):  # type: ignore[misc]
        """Learning curve: teacher-forced exactness on held-out episodes under both masks."""

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            if model is None or (state.global_step % every and state.global_step != state.max_steps):
                return
            row: dict[str, Any] = {"stage": stage, "phase": phase, "step": state.global_step}
            for name, batch in probes.items():
                row[f"{name}_exact"], row[f"{name}_token_acc"] = teacher_forced_exact(model, batch)
            losses = [h["loss"] for h in state.log_history if "loss" in h]
            row["loss"] = losses[-1] if losses else None
            history.append(row)
            logger.info("probe %s", row)
            print(json.dumps(row), flush=True)  # noqa: T201 - the learning curve goes to the run log

    return Probe()


def _stop_at_callback(step: int) -> Any:
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):  # type: ignore[misc]
        """Stop a phase at a given step while keeping its full-length LR schedule (for exact reproduction)."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step >= step:
                control.should_training_stop = True

    return StopAt()


def _probes(tok: Any) -> dict[str, dict[str, Any]]:
    return probe_batches(tok, TASK)


def _run_phase(
    model: Any,
    tok: Any,
    *,
    name: str,
    stage: int,
    steps: int,
    data_seed: int,
    task: FactTrackerConfig,
    preset: TrainingPreset,
    work: Path,
    probes: dict[str, dict[str, Any]],
    history: list[dict[str, Any]],
    probe_every: int,
    disable_tqdm: bool,
    stop_at: int | None = None,
    save_steps: int | None = None,
) -> tuple[Any, Any, float]:
    data = episode_dataset(tok, steps * preset.per_device_batch_size, seed=data_seed, config=task)
    callbacks = [_probe_callback(probes, probe_every, stage, history, name)]
    if stop_at is not None:
        callbacks.append(_stop_at_callback(stop_at))
    ts = time.time()
    model, tok, trainer = train_stage(
        model,
        data,
        stage=stage,
        preset=preset,
        output_dir=work / name,
        tokenizer=tok,
        max_steps=steps,
        callbacks=callbacks,
        disable_tqdm=disable_tqdm,
        extra_args={
            "use_cpu": True,
            "dataloader_pin_memory": False,
            **(
                {"save_strategy": "steps", "save_steps": save_steps, "save_total_limit": 3}
                if save_steps
                else {"save_strategy": "no"}
            ),
        },
    )
    history.extend({"stage": stage, "phase": name, **h} for h in trainer.state.log_history if "loss" in h)
    return model, tok, round(time.time() - ts, 1)


def train_tiny_model(
    out_dir: str | Path,
    *,
    seed: int = 0,
    work_dir: str | Path | None = None,
    stage1_steps: int | None = None,
    stage2_steps: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    probe_every: int = 100,
    threads: int | None = None,
    disable_tqdm: bool = True,
    stage2_extra_steps: int = 0,
    stop_at: int | None = None,
    stage2c_steps: int = 0,
    stage2d_steps: int = 0,
    stage2e_steps: int = 0,
) -> dict[str, Any]:
    """Train the tiny memento model from scratch through stages 1 and 2 and save it to ``out_dir``.

    Returns a summary (parameters, timings, learning curves) that is also written to ``training_log.json``.
    """
    import torch

    from .._tiny import build_tiny_qwen3

    if threads is not None:
        torch.set_num_threads(threads)
    base: TrainingPreset = PRESETS["tiny"]
    upd: dict[str, Any] = {"seed": seed}
    if batch_size is not None:
        upd.update(per_device_batch_size=batch_size, global_batch_size=batch_size)
    if learning_rate is not None:
        upd["learning_rate"] = learning_rate
    preset = base.model_copy(update=upd)
    s1 = stage1_steps if stage1_steps is not None else preset.max_steps
    s2 = stage2_steps if stage2_steps is not None else max(1, (preset.max_steps * 3) // 5)
    work = Path(work_dir) if work_dir is not None else Path(out_dir).with_name(Path(out_dir).name + "_work")
    t0 = time.time()
    cpu0 = time.process_time()
    tok = build_task_tokenizer()
    model = build_tiny_qwen3(len(tok), seed=seed, **TINY_ARCH)
    finalize_model_config(model, tok)
    n_params = sum(p.numel() for p in model.parameters())
    probes = _probes(tok)
    history: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    phases: list[tuple[str, int, int, int, FactTrackerConfig, int | None]] = [
        ("stage1", 1, s1, 1000 + seed, STAGE1_TASK, None),
        ("stage2", 2, s2, 2000 + seed, RANDOM_GOAL_TASK, None),
    ]
    if stage2_extra_steps:
        # A second stage-2 pass on fresh episodes with its own warmup and cosine schedule.
        phases.append(("stage2b", 2, stage2_extra_steps, 3000 + seed, RANDOM_GOAL_TASK, stop_at))
    for name, steps_ in (("stage2c", stage2c_steps), ("stage2d", stage2d_steps), ("stage2e", stage2e_steps)):
        if steps_:
            phases.append((name, 2, steps_, _PHASE_SEED[name] + seed, _PHASE_TASK[name], None))
    for name, stage, steps, data_seed, task, stop in phases:
        model, tok, secs = _run_phase(
            model,
            tok,
            name=name,
            stage=stage,
            steps=steps,
            data_seed=data_seed,
            task=task,
            preset=preset,
            work=work,
            probes=probes,
            history=history,
            probe_every=probe_every,
            disable_tqdm=disable_tqdm,
            stop_at=stop,
            save_steps=100 if name != "stage1" and name != "stage2" else None,
        )
        timings[f"{name}_s"] = secs
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    finalize_model_config(model, tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    summary = {
        "seed": seed,
        "parameters": n_params,
        "architecture": TINY_ARCH,
        "vocab_size": len(tok),
        "task": TASK.model_dump(),
        "preset": preset.model_dump(),
        "stage1_steps": s1,
        "stage2_steps": s2,
        "stage2b_steps": stage2_extra_steps,
        "stage2b_stop_at": stop_at,
        "wall_s": round(time.time() - t0, 1),
        "cpu_s": round(time.process_time() - cpu0, 1),
        "threads": torch.get_num_threads(),
        **timings,
        "curve": history,
    }
    (out / "training_log.json").write_text(json.dumps(summary, indent=1))
    return summary


SHIPPED_PHASES: dict[str, int] = {
    "stage2_extra_steps": 1200,
    "stop_at": 800,
    "stage2c_steps": 400,
    "stage2d_steps": 700,
    "stage2e_steps": 300,
}
"""The phases after stages 1 and 2 (500 + 300 steps) that produced the shipped weights (see its model card)."""

_PHASE_SEED = {"stage2b": 3000, "stage2c": 4000, "stage2d": 5000, "stage2e": 6000}
_PHASE_TASK = {"stage2b": RANDOM_GOAL_TASK, "stage2c": TASK, "stage2d": LOOKUP_TASK, "stage2e": TASK}


def continue_tiny_model(
    from_dir: str | Path,
    out_dir: str | Path,
    *,
    steps: int,
    seed: int = 0,
    stop_at: int | None = None,
    work_dir: str | Path | None = None,
    probe_every: int = 50,
    threads: int | None = None,
    disable_tqdm: bool = True,
    phase: Literal["stage2b", "stage2c", "stage2d", "stage2e"] = "stage2b",
) -> dict[str, Any]:
    """Run the ``stage2b`` (or ``stage2c``) phase of :func:`train_tiny_model` on a saved stage-2 model (same data seed and schedule).

    ``train_tiny_model(..., stage2_extra_steps=steps, stop_at=stop_at)`` in one go gives the same weights; this
    entry point continues a run whose stage-2 output is on disk. A ``training_log.json`` next to ``from_dir`` (or
    in it) is extended.
    """
    import torch

    from ._trainer import load_model_and_tokenizer

    if threads is not None:
        torch.set_num_threads(threads)
    preset = PRESETS["tiny"].model_copy(update={"seed": seed})
    src = Path(from_dir)
    model, tok = load_model_and_tokenizer(str(src))
    work = Path(work_dir) if work_dir is not None else Path(out_dir).with_name(Path(out_dir).name + "_work")
    history: list[dict[str, Any]] = []
    t0, cpu0 = time.time(), time.process_time()
    model, tok, secs = _run_phase(
        model,
        tok,
        name=phase,
        stage=2,
        steps=steps,
        data_seed=_PHASE_SEED[phase] + seed,
        task=_PHASE_TASK[phase],
        preset=preset,
        work=work,
        probes=_probes(tok),
        history=history,
        probe_every=probe_every,
        disable_tqdm=disable_tqdm,
        stop_at=stop_at,
        save_steps=100,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    finalize_model_config(model, tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    prev_log = next((p / "training_log.json" for p in (out, src) if (p / "training_log.json").is_file()), None)
    summary: dict[str, Any] = json.loads(prev_log.read_text()) if prev_log is not None else {"curve": []}
    summary[f"{phase}_steps"] = steps
    summary[f"{phase}_stop_at"] = stop_at
    summary[f"{phase}_s"] = secs
    summary["wall_s"] = round(summary.get("wall_s", 0.0) + time.time() - t0, 1)
    summary["cpu_s"] = round(summary.get("cpu_s", 0.0) + time.process_time() - cpu0, 1)
    summary["curve"] = list(summary.get("curve", [])) + history
    (out / "training_log.json").write_text(json.dumps(summary, indent=1))
    return summary
