"""The tiny memento model's recipe: tokenizer, architecture, fact-tracker data and both SFT stages on TRL.

Run ``python -m autogen_ext_memento.training._tiny_recipe --out DIR`` (or ``scripts/train_tiny.sh``); it is
deterministic for a given seed on one machine. The shipped model in ``autogen_ext_memento/assets/tiny_memento`` was
produced by it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..chat_format import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, TOOL_RESPONSE_CLOSE, TOOL_RESPONSE_OPEN, TurnEncoder
from ..grammar import MementoConfig, MementoTokenIds
from ..tasks import Episode, FactTrackerConfig, corpus, episode_messages, sample_episodes, tool_schema_tool
from ._collator import IGNORE_INDEX, MementoCollator
from ._data import TokenizedSample, encode_messages
from ._presets import PRESETS, TrainingPreset
from ._trainer import train_stage

logger = logging.getLogger(__name__)

TOOL_TAGS: tuple[str, ...] = (TOOL_CALL_OPEN, TOOL_CALL_CLOSE, TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE)
TINY_ARCH: dict[str, int] = {
    "hidden_size": 128,
    "layers": 4,
    "heads": 4,
    "kv_heads": 2,
    "head_dim": 32,
    "intermediate_size": 512,
    "max_position_embeddings": 8192,
}
TASK = FactTrackerConfig()
"""Training distribution: 3 goal keys of 24, 10 facts per page, 2-8 pages."""


def build_task_tokenizer(seed: int = 1234, vocab_size: int = 1024) -> Any:
    """Byte-level BPE trained on rendered fact-tracker episodes (keys, values and JSON pieces become single tokens).

    The tool-call and tool-response tags are added as whole tokens, as in Qwen3's vocabulary.
    """
    from .._tiny import build_tokenizer

    eps = sample_episodes(400, seed, TASK.model_copy(update={"min_pages": 1, "max_pages": 12}))
    return build_tokenizer(corpus(eps), vocab_size=vocab_size, extra_special=TOOL_TAGS)


def encode_episode(episode: Episode, tokenizer: Any, encoder: TurnEncoder | None = None) -> TokenizedSample:
    """One episode as a labelled sample in the agent chat format."""
    return encode_messages(episode_messages(episode), tokenizer, [tool_schema_tool()], encoder)


def episode_dataset(tokenizer: Any, n: int, seed: int, config: FactTrackerConfig = TASK) -> Any:
    """``n`` seeded episodes as a ``datasets.Dataset`` of ``input_ids``/``labels``."""
    import datasets

    enc = TurnEncoder(tokenizer)
    samples = [encode_episode(e, tokenizer, enc) for e in sample_episodes(n, seed, config)]
    return datasets.Dataset.from_dict(
        {"input_ids": [s.input_ids for s in samples], "labels": [s.labels for s in samples]}
    )


def teacher_forced_exact(model: Any, batch: dict[str, Any]) -> tuple[float, float]:
    """``(sample_exact, token_acc)``: share of samples whose every labelled token is the argmax, and token accuracy."""
    import torch

    from ._collator import MASK_KEY

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


def _probe_callback(probes: dict[str, dict[str, Any]], every: int, stage: int, history: list[dict[str, Any]]) -> Any:
    from transformers import TrainerCallback

    class Probe(TrainerCallback):  # type: ignore[misc]
        """Learning curve: teacher-forced exactness on held-out episodes under both masks."""

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            if model is None or (state.global_step % every and state.global_step != state.max_steps):
                return
            row: dict[str, Any] = {"stage": stage, "step": state.global_step}
            for name, batch in probes.items():
                row[f"{name}_exact"], row[f"{name}_token_acc"] = teacher_forced_exact(model, batch)
            losses = [h["loss"] for h in state.log_history if "loss" in h]
            row["loss"] = losses[-1] if losses else None
            history.append(row)
            logger.info("probe %s", row)
            print(json.dumps(row), flush=True)  # noqa: T201 - the learning curve goes to the run log

    return Probe()


def train_tiny_model(
    out_dir: str | Path,
    *,
    seed: int = 0,
    work_dir: str | Path | None = None,
    stage1_steps: int | None = None,
    stage2_steps: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    probe_every: int = 50,
    threads: int | None = None,
    disable_tqdm: bool = True,
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
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    model.config.eos_token_id = im_end
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = im_end
    model.generation_config.pad_token_id = tok.pad_token_id
    n_params = sum(p.numel() for p in model.parameters())
    ids = MementoTokenIds.from_tokenizer(tok)
    bs = preset.per_device_batch_size
    held = episode_dataset(tok, 64, seed=99_999)
    rows = [held[i] for i in range(len(held))]
    probes = {
        "causal": MementoCollator(ids, stage=1, pad_token_id=tok.pad_token_id)(rows),
        "memento": MementoCollator(ids, stage=2, config=MementoConfig(), pad_token_id=tok.pad_token_id)(rows),
    }
    history: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for stage, steps, data_seed in ((1, s1, 1000 + seed), (2, s2, 2000 + seed)):
        data = episode_dataset(tok, steps * bs, seed=data_seed)
        ts = time.time()
        model, tok, trainer = train_stage(
            model,
            data,
            stage=stage,
            preset=preset,
            output_dir=work / f"stage{stage}",
            tokenizer=tok,
            max_steps=steps,
            callbacks=[_probe_callback(probes, probe_every, stage, history)],
            disable_tqdm=disable_tqdm,
            extra_args={"use_cpu": True, "save_strategy": "no"},
        )
        timings[f"stage{stage}_s"] = round(time.time() - ts, 1)
        history.extend({"stage": stage, **h} for h in trainer.state.log_history if "loss" in h)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
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
        "wall_s": round(time.time() - t0, 1),
        "cpu_s": round(time.process_time() - cpu0, 1),
        "threads": torch.get_num_threads(),
        **timings,
        "curve": history,
    }
    (out / "training_log.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Retrain the tiny memento model (both stages, CPU).")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--stage1-steps", type=int, default=None)
    p.add_argument("--stage2-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--probe-every", type=int, default=50)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    summary = train_tiny_model(
        a.out,
        seed=a.seed,
        work_dir=a.work_dir,
        stage1_steps=a.stage1_steps,
        stage2_steps=a.stage2_steps,
        batch_size=a.batch_size,
        learning_rate=a.lr,
        threads=a.threads,
        probe_every=a.probe_every,
    )
    summary.pop("curve")
    print(json.dumps(summary, indent=1))  # noqa: T201
    if a.work_dir is None:
        shutil.rmtree(Path(a.out).with_name(Path(a.out).name + "_work"), ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
