"""``autogen-memento train``: memento SFT stages on TRL with a preset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._args import non_negative_int, positive_int

FACT_TRACKER = "fact-tracker"
TWINS_PRESET = "tiny-twins"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="memento SFT (stage 1 causal, stage 2 memento mask) on TRL",
        description=(
            "Train a model with the memento SFT recipe. Stage 0 is plain reasoning SFT (for non-reasoning bases), "
            "stage 1 trains on memento-formatted data with causal attention, stage 2 with the memento mask, "
            "starting from the stage-1 checkpoint. --data is a local JSONL/JSON/parquet file or directory "
            "(OpenMementos 'default' or 'full' schema, or agent trajectories with 'messages'), a hub dataset name, "
            f"or '{FACT_TRACKER}' for the synthetic agent task. --preset {TWINS_PRESET} --out DIR retrains the two "
            "shipped twins from scratch on CPU (DIR/tiny_full: causal base; DIR/tiny_memento: its memento "
            "fine-tune; same tokenizer, stage 1, data stream and steps)."
        ),
    )
    stage = p.add_mutually_exclusive_group()
    stage.add_argument("--stage", type=int, choices=(0, 1, 2), help="run one stage")
    stage.add_argument("--stages", help="run several stages in order, e.g. 1,2 (each from the previous checkpoint)")
    p.add_argument(
        "--preset", required=True, help=f"preset name (autogen_ext_memento.training.PRESETS) or {TWINS_PRESET}"
    )
    p.add_argument("--data", help=f"dataset path or hub name, or '{FACT_TRACKER}' (not with {TWINS_PRESET})")
    p.add_argument("--out", required=True, help="output directory (stage N goes to OUT/stageN with --stages)")
    p.add_argument("--model", help="base model path or hub name (default: the preset's); stage 2: stage-1 output")
    p.add_argument(
        "--dataset-config",
        default="auto",
        choices=("auto", "default", "full"),
        help="OpenMementos schema of the rows (auto: by columns)",
    )
    p.add_argument("--hub-config", default=None, help="hub dataset configuration name (e.g. 'full')")
    p.add_argument("--max-steps", type=positive_int, default=None, help="override the preset's step count")
    p.add_argument("--seed", type=non_negative_int, default=None, help="override the preset's seed")
    p.add_argument("--episodes", type=positive_int, default=None, help=f"{FACT_TRACKER}: episodes per stage")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming from checkpoints")
    twins = p.add_argument_group(f"{TWINS_PRESET}")
    twins.add_argument(
        "--curriculum-steps", type=non_negative_int, default=None, help="shared causal steps on short episodes"
    )
    twins.add_argument(
        "--warmup-steps", type=non_negative_int, default=None, help="shared causal steps on bare episodes (no chat)"
    )
    twins.add_argument(
        "--warmup-until",
        type=float,
        default=None,
        help="end the warm-up once teacher-forced exactness on held-out bare episodes reaches this share (0-1]",
    )
    twins.add_argument(
        "--curriculum-until",
        type=float,
        default=None,
        help="end the curriculum once teacher-forced exactness on held-out short episodes reaches this share (0-1]",
    )
    twins.add_argument("--learning-rate", type=float, default=None, help="peak learning rate of every phase")
    twins.add_argument("--stage1-steps", type=positive_int, default=None, help="shared causal steps on the task")
    twins.add_argument("--stage2-steps", type=positive_int, default=None, help="each twin's second-stage steps")
    twins.add_argument("--batch-size", type=positive_int, default=None, help="episodes per step")
    twins.add_argument(
        "--position-gap",
        type=int,
        default=None,
        help="length augmentation: random position gap of up to N after each block, in every phase (default 100)",
    )
    twins.add_argument(
        "--memento-causal-share",
        type=float,
        default=None,
        help="share of tiny_memento's stage-2 samples trained causally, the rest under the memento mask (default 0.5)",
    )
    twins.add_argument("--jobs", type=int, choices=(1, 2), default=None, help="twins trained at once in stage 2")
    p.set_defaults(func=run)


def _run_twins(args: argparse.Namespace) -> int:
    from ..training import TwinsRecipe, train_tiny_twins

    given = {
        "seed": args.seed,
        "warmup_steps": args.warmup_steps,
        "warmup_until": args.warmup_until,
        "curriculum_steps": args.curriculum_steps,
        "curriculum_until": args.curriculum_until,
        "learning_rate": args.learning_rate,
        "stage1_steps": args.stage1_steps,
        "stage2_steps": args.stage2_steps,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "jobs": args.jobs,
        "position_gap": args.position_gap,
        "memento_causal_share": args.memento_causal_share,
    }
    recipe = TwinsRecipe(**{k: v for k, v in given.items() if v is not None})
    summary = train_tiny_twins(args.out, recipe)
    brief = {k: v for k, v in summary.items() if not k.startswith("stage")}
    brief["outputs"] = [str(Path(args.out) / d) for d in ("tiny_full", "tiny_memento")]
    print(json.dumps(brief, indent=1))
    return 0


def _stages(args: argparse.Namespace) -> list[int]:
    if args.stage is not None:
        return [int(args.stage)]
    out = [int(s) for s in str(args.stages).split(",") if s.strip()]
    if not out or any(s not in (0, 1, 2) for s in out):
        raise SystemExit(f"--stages must list stages among 0,1,2, got {args.stages!r}")
    return out


def run(args: argparse.Namespace) -> int:
    from ..training import build_dataset, get_preset, load_dataset_rows, train_stage

    if args.preset == TWINS_PRESET:
        return _run_twins(args)
    if args.data is None or (args.stage is None and args.stages is None):
        raise SystemExit(f"--data and one of --stage/--stages are required (except with --preset {TWINS_PRESET})")
    preset = get_preset(args.preset)
    if args.seed is not None:
        preset = preset.model_copy(update={"seed": args.seed})
    stages = _stages(args)
    out = Path(args.out)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    model: Any = args.model or preset.base_model
    if model is None:
        raise SystemExit(
            f"preset {preset.name!r} has no base model: pass --model"
            f" (or --preset {TWINS_PRESET} to train the shipped twins from scratch)"
        )
    tokenizer: Any = None
    for stage in stages:
        target = out / f"stage{stage}" if len(stages) > 1 else out
        if tokenizer is None:
            from ..training import add_and_init_tokens, load_model_and_tokenizer

            model, tokenizer = load_model_and_tokenizer(model, bf16=preset.bf16)
            add_and_init_tokens(tokenizer, model, seed=preset.seed)
        if args.data == FACT_TRACKER:
            from ..training import episode_dataset

            data = episode_dataset(tokenizer, args.episodes or 1000, seed=1000 * (stage + 1) + preset.seed)
        else:
            rows = load_dataset_rows(args.data, config=args.hub_config)
            data = build_dataset(rows, tokenizer, config=args.dataset_config, max_length=preset.max_length)
        print(f"stage {stage}: {len(data)} samples -> {target}")
        model, tokenizer, _ = train_stage(
            model,
            data,
            stage=stage,
            preset=preset,
            output_dir=target,
            tokenizer=tokenizer,
            max_steps=args.max_steps,
            resume=not args.no_resume,
            disable_tqdm=False,
        )
    print(json.dumps({"out": str(out), "stages": stages, "preset": preset.name}))
    return 0
