"""Four-mode evaluation of a memento model on held-out fact-tracker episodes, in generation mode.

Modes (measured in one run, on the same episodes, with :class:`~autogen_ext_memento.TransformersBackend`
sessions, whose live-KV accounting gives peak and area under the curve):

* ``full``: full context, nothing evicted (``MementoConfig(keep_last_n_blocks=-1)``); the model still writes
  mementos.
* ``memento_kv``: each block's KV is physically evicted when its memento completes; the memento's KV is kept.
* ``restart``: as ``memento_kv``, but each memento's KV is recomputed from its text without its block
  (``restart_mode=True``): the "dual information stream" ablation.
* ``truncate``: no mementos: the history sent to the model keeps the prompt and only the latest action/observation
  pair (older pairs and every memento are dropped from the text); nothing is evicted.

Episodes run through :class:`~autogen_ext_memento.MementoChatCompletionClient` (``create_blocking``), so the
closure protocol is the client's: after an observation the model writes the memento up to ``<|summary_end|>``, then
the next action.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)

from ..backends import TransformersBackend
from ..chat_format import split_closure
from ..grammar import MementoConfig
from ..tasks import (
    AGENT_NAME,
    SYSTEM_PROMPT,
    TOOL_NAME,
    Episode,
    FactTrackerConfig,
    FactTrackerEnv,
    memento_of,
    sample_episodes,
    score_answer,
)

Mode = Literal["full", "memento_kv", "restart", "truncate"]
MODES: tuple[Mode, ...] = ("full", "memento_kv", "restart", "truncate")


def mode_config(mode: Mode) -> MementoConfig:
    """The backend's memento rule for a mode."""
    if mode == "memento_kv":
        return MementoConfig(keep_last_n_blocks=0)
    if mode == "restart":
        return MementoConfig(keep_last_n_blocks=0, restart_mode=True)
    if mode in ("full", "truncate"):
        return MementoConfig(keep_last_n_blocks=-1)
    raise ValueError(f"unknown mode {mode!r}; known: {MODES}")


@dataclass
class EpisodeOutcome:
    """What happened in one episode under one mode."""

    exact: bool
    per_key: float
    mementos_right: int
    mementos: int
    turns: int
    answer: str | None
    peak_kv_tokens: int
    auc_kv: int
    full_context_kv_tokens: int
    evictions: int
    trace: list[int] = field(default_factory=list, repr=False)


@dataclass
class ModeResult:
    """Aggregates of one mode (KV numbers are means over episodes, in tokens)."""

    accuracy: float
    per_key_accuracy: float
    memento_accuracy: float
    peak_kv_tokens: float
    max_peak_kv_tokens: int
    auc_kv: float
    full_context_kv_tokens: float
    evictions: float
    episodes: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _truncate(messages: Sequence[LLMMessage]) -> list[LLMMessage]:
    """Prompt + the latest action/observation pair, with every memento removed (the no-memento baseline)."""
    head = [m for m in messages[:2] if isinstance(m, (SystemMessage, UserMessage))]
    last = None
    for i, m in enumerate(messages):
        if isinstance(m, AssistantMessage) and not isinstance(m.content, str):
            last = i
    if last is None:
        return list(messages)
    kept: list[LLMMessage] = []
    for m in messages[last:]:
        if isinstance(m, AssistantMessage):
            _, rest = split_closure(m.thought)
            m = AssistantMessage(content=m.content, thought=rest, source=m.source)
        kept.append(m)
    return head + kept


class EpisodeRunner:
    """Drives fact-tracker episodes through :class:`~autogen_ext_memento.MementoChatCompletionClient` on a backend.

    Each episode is its own client session; the agent loop is the one ``AssistantAgent`` runs (call the model,
    execute the tool call, append the result, call again until a text answer).

    Args:
        backend: the backend (its memento rule decides the mode, see :func:`mode_config`).
        truncate: send only the latest action/observation pair and no mementos (the ``truncate`` mode).
        max_new_tokens: cap per generation (answer/tool call and memento alike).
    """

    def __init__(self, backend: TransformersBackend, *, truncate: bool = False, max_new_tokens: int = 64) -> None:
        from .._client import MementoChatCompletionClient

        self.backend = backend
        self.truncate = truncate
        self.client = MementoChatCompletionClient(
            backend, max_new_tokens=max_new_tokens, max_memento_tokens=max_new_tokens
        )

    def run(self, episode: Episode, session_id: str) -> EpisodeOutcome:
        """Play one episode to its answer (or until the turn budget runs out)."""
        env = FactTrackerEnv(episode)
        tool = env.tool()
        msgs: list[LLMMessage] = [
            SystemMessage(content=SYSTEM_PROMPT),
            UserMessage(content=episode.goal_text, source="user"),
        ]
        answer: str | None = None
        mementos: list[str] = []
        turns = 0
        self.backend.close_session(session_id)
        while turns < len(episode.pages) + 2:
            turns += 1
            view = _truncate(msgs) if self.truncate else msgs
            res = self.client.create_blocking(view, tools=[tool], extra_create_args={"session_id": session_id})
            closure, _ = split_closure(res.thought)
            if closure is not None:
                mementos.append(memento_of(closure))
            if isinstance(res.content, str):
                answer = res.content
                break
            msgs.append(AssistantMessage(content=res.content, thought=res.thought, source=AGENT_NAME))
            results = []
            for call in res.content:
                try:
                    args = json.loads(call.arguments)
                    out = env.read(int(args["cursor"])) if call.name == TOOL_NAME else f"error: unknown tool {call.name}"
                except (ValueError, KeyError, TypeError) as e:
                    out = f"error: {e}"
                results.append(FunctionExecutionResult(content=out, name=call.name, call_id=call.id, is_error=False))
            msgs.append(FunctionExecutionResultMessage(content=results))
        exact, per_key = score_answer(episode, answer) if answer is not None else (False, 0.0)
        right = sum(m.strip() == episode.memento(i) for i, m in enumerate(mementos[: len(episode.pages)]))
        st = self.backend.stats(session_id)
        assert st is not None
        return EpisodeOutcome(
            exact,
            per_key,
            right,
            len(episode.pages),
            turns,
            answer,
            st.peak_kv_tokens,
            st.auc_kv,
            st.full_context_kv_tokens,
            st.evictions,
            list(st.trace),
        )


def evaluate_mode(
    model: Any,
    tokenizer: Any,
    episodes: Sequence[Episode],
    mode: Mode,
    *,
    max_new_tokens: int = 64,
    keep_traces: bool = False,
) -> tuple[ModeResult, list[EpisodeOutcome]]:
    """Run every episode under one mode with a fresh :class:`TransformersBackend` over the given model."""
    backend = TransformersBackend(model, tokenizer, memento=mode_config(mode))
    runner = EpisodeRunner(backend, truncate=mode == "truncate", max_new_tokens=max_new_tokens)
    t0 = time.time()
    outs: list[EpisodeOutcome] = []
    for i, ep in enumerate(episodes):
        o = runner.run(ep, f"{mode}-{i}")
        backend.close_session(f"{mode}-{i}")
        if not keep_traces:
            o.trace = []
        outs.append(o)
    n = max(1, len(outs))
    res = ModeResult(
        accuracy=sum(o.exact for o in outs) / n,
        per_key_accuracy=sum(o.per_key for o in outs) / n,
        memento_accuracy=sum(o.mementos_right for o in outs) / max(1, sum(o.mementos for o in outs)),
        peak_kv_tokens=statistics.fmean(o.peak_kv_tokens for o in outs) if outs else 0.0,
        max_peak_kv_tokens=max((o.peak_kv_tokens for o in outs), default=0),
        auc_kv=statistics.fmean(o.auc_kv for o in outs) if outs else 0.0,
        full_context_kv_tokens=statistics.fmean(o.full_context_kv_tokens for o in outs) if outs else 0.0,
        evictions=statistics.fmean(o.evictions for o in outs) if outs else 0.0,
        episodes=len(outs),
        seconds=round(time.time() - t0, 2),
    )
    return res, outs


def evaluate(
    model: Any,
    tokenizer: Any,
    *,
    episodes: int = 50,
    seed: int = 12345,
    pages: tuple[int, int] | int = (1, 5),
    modes: Sequence[Mode] = MODES,
    max_new_tokens: int = 64,
    task: FactTrackerConfig | None = None,
) -> dict[str, Any]:
    """Evaluate all modes on the same held-out episodes; returns the JSON-ready report (traces of episode 0)."""
    lo, hi = (pages, pages) if isinstance(pages, int) else pages
    cfg = (task or FactTrackerConfig()).model_copy(update={"min_pages": lo, "max_pages": hi})
    eps = sample_episodes(episodes, seed, cfg)
    report: dict[str, Any] = {"episodes": episodes, "seed": seed, "pages": [lo, hi], "modes": {}, "traces": {}}
    longest = max(range(len(eps)), key=lambda i: len(eps[i].pages)) if eps else 0
    for mode in modes:
        res, outs = evaluate_mode(model, tokenizer, eps, mode, max_new_tokens=max_new_tokens, keep_traces=True)
        report["modes"][mode] = res.as_dict()
        if outs:
            report["traces"][mode] = outs[longest].trace
    full = report["modes"].get("full")
    if full:
        for r in report["modes"].values():
            r["peak_kv_ratio_vs_full"] = full["peak_kv_tokens"] / max(1e-9, r["peak_kv_tokens"])
            r["auc_kv_ratio_vs_full"] = full["auc_kv"] / max(1e-9, r["auc_kv"])
    return report


def plot_sawtooth(report: dict[str, Any], path: str | Path) -> Path:
    """Write the live-KV trace of the longest episode, one line per mode, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for mode, trace in report.get("traces", {}).items():
        ax.plot(range(1, len(trace) + 1), trace, label=mode, linewidth=1.2)
    ax.set_xlabel("computed token")
    ax.set_ylabel("live KV entries (tokens)")
    ax.set_title(f"Live KV per step, longest of {report.get('episodes')} episodes (seed {report.get('seed')})")
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of the report."""
    head = f"{'mode':<11} {'exact':>6} {'per-key':>8} {'memento':>8} {'peak KV':>8} {'AUC KV':>9} {'peak x':>7}"
    lines = [head, "-" * len(head)]
    for mode, r in report["modes"].items():
        lines.append(
            f"{mode:<11} {r['accuracy']:>6.1%} {r['per_key_accuracy']:>8.1%} {r['memento_accuracy']:>8.1%} "
            f"{r['peak_kv_tokens']:>8.1f} {r['auc_kv']:>9.0f} {r.get('peak_kv_ratio_vs_full', 1.0):>7.2f}"
        )
    lines.append(f"episodes={report['episodes']} seed={report['seed']} pages={report['pages']}")
    return "\n".join(lines)
