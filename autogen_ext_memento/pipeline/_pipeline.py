"""The annotation pipeline: atomic units → boundary scores → exact segmentation → mementos with a judge loop → JSONL.

Each output line is one sample in the OpenMementos ``full`` schema plus our fields:

==================  ==========================================================================================
field               meaning
==================  ==========================================================================================
``id``              input id (the resume key)
``kind``            ``"reasoning"`` or ``"agent"``
``problem``         the task (ChatML user turn)
``response``        the SFT target in the grammar's trace shape: ``<think>\\n`` + one
                    :func:`~autogen_ext_memento.grammar.format_block` per block joined by ``\\n`` +
                    ``\\n</think>\\n\\n`` + answer (reasoning); the blocks (tool calls + results) and mementos
                    followed by the final answer (agent)
``sentences``       the atomic units (agent: per block the rendered tool calls, then the tool responses)
``blocks``          inclusive ``[first, last]`` sentence-index pairs covering all sentences
``block_summaries`` the memento of each block
``boundary_scores`` one score per sentence boundary (``len(sentences) - 1``; agent: 0 inside, 3 between blocks)
``judge_rounds``    per block, the list of rounds ``{"round", "score", "feedback", "memento", "tokens"}``
``judge_scores``    per block, the score of the memento kept (the best one; the latest on ties)
``sentence_tokens`` / ``block_tokens`` / ``summary_tokens``  token counts (the pipeline's counter)
``compression``     Σ summary tokens / Σ block tokens of the sample
``messages``        agent only: a JSON string of the AutoGen ``LLMMessage`` dumps (pydantic) with each closure at
                    the start of the next ``AssistantMessage.thought`` (read with
                    :func:`~autogen_ext_memento.pipeline.llm_messages` and render with
                    :func:`autogen_ext_memento.chat_format.render`); a string so Arrow/``datasets`` can load it
``tools``           agent only: a JSON string of the tool schemas
``text``            agent only: ``render(messages, tools).text``, the exact ChatML training string
``meta``            configuration, client, objective of the segmentation and the sample's LLM usage
==================  ==========================================================================================

Resumability: records are appended one per line and flushed (``fsync``) as each sample finishes; a rerun reads
the ids already in the output, drops a torn last line, and only processes the rest. An interrupted run therefore
loses at most the samples in flight and never writes one twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from autogen_core.models import ChatCompletionClient

from ..chat_format import format_block, render, wrap_think
from ..grammar import escape_special
from ._agent import AgentTrajectory, agent_blocks, apply_mementos, dump_messages, final_answer
from ._config import PipelineConfig, ReasoningSample
from ._io import append_line, progress_bar, read_done_ids, read_records
from ._llm import LLMCallError, LLMRunner, UsageStats
from ._llm_roles import LLMRoles
from ._report import RunSummary, summarize_records
from ._roles import BoundaryScorer, MementoCompressor, MementoJudge
from ._segment import segment
from ._split import TokenCounter, regex_token_count, split_units
from ._stages import AnnotationStages

PIPELINE_VERSION = 1


class AnnotationPipeline(AnnotationStages):
    """Annotates reasoning traces and agent trajectories with blocks and mementos using any model client.

    The boundary scorer, the memento compressor and the judge are :class:`LLMRoles` on ``client`` unless given
    (e.g. :class:`HeuristicRoles` for all three, or a stronger judge than the compressor).

    Example:

    .. code-block:: python

        import asyncio

        from autogen_ext_memento.pipeline import AnnotationPipeline, HeuristicChatCompletionClient, PipelineConfig


        async def main() -> None:
            pipe = AnnotationPipeline(HeuristicChatCompletionClient(), PipelineConfig(min_block_tokens=20))
            text = "We need x. Let x + 2 = 5.\\n\\nSo x = 3. Check: 3 + 2 = 5, correct.\\n\\nThus the answer is 3."
            record = await pipe.annotate_reasoning_record({"id": "a", "problem": "Solve x + 2 = 5.", "reasoning": text})
            print(record["blocks"], record["block_summaries"])


        asyncio.run(main())
    """

    def __init__(
        self,
        client: ChatCompletionClient | None,
        config: PipelineConfig | None = None,
        *,
        count_tokens: TokenCounter = regex_token_count,
        model_name: str | None = None,
        scorer: BoundaryScorer | None = None,
        compressor: MementoCompressor | None = None,
        judge: MementoJudge | None = None,
    ) -> None:
        self.config = config or PipelineConfig()
        self.usage = UsageStats()
        llm: LLMRoles | None = None
        if client is not None:
            self.runner = LLMRunner(
                client,
                concurrency=self.config.concurrency,
                max_retries=self.config.max_retries,
                backoff_base=self.config.backoff_base,
                backoff_max=self.config.backoff_max,
                usage=self.usage,
            )
            llm = LLMRoles(self.runner, self.config.unit_prompt_chars)
        scorer, compressor, judge = scorer or llm, compressor or llm, judge or llm
        if scorer is None or compressor is None or judge is None:
            raise ValueError("AnnotationPipeline: without a client, give the scorer, the compressor and the judge")
        super().__init__(self.config, count_tokens, scorer, compressor, judge)
        self.model_name = model_name or type(client if client is not None else compressor).__name__

    # --- samples -----------------------------------------------------------------------------------------------
    def _meta(self, usage: UsageStats, **extra: Any) -> dict[str, Any]:
        cfg = self.config
        return {
            "pipeline_version": PIPELINE_VERSION,
            "model": self.model_name,
            "lam": cfg.lam,
            "min_block_tokens": cfg.min_block_tokens,
            "tau": cfg.tau,
            "rounds": cfg.rounds,
            "two_pass": cfg.two_pass,
            "usage": {
                "calls": usage.calls,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
            },
            **extra,
        }

    def _judge_fields(self, rounds: list[list[dict[str, Any]]], summaries: list[str]) -> dict[str, Any]:
        scores = []
        for rs, s in zip(rounds, summaries, strict=True):
            scores.append(max((r["score"] for r in rs if r["memento"] == s), default=0.0))
        return {"judge_rounds": rounds, "judge_scores": scores}

    async def annotate_reasoning(self, sample: ReasoningSample) -> dict[str, Any]:
        """Annotate one reasoning trace (see the module docstring for the record)."""
        cfg = self.config
        usage = UsageStats()
        text = sample.reasoning
        units = split_units(text, self.count_tokens, cfg.min_unit_tokens)
        sentences = [u.text for u in units]
        sizes = [self.count_tokens(s) for s in sentences]
        scores = await self.score_boundaries(sentences, sample.problem, usage)
        seg = segment(sizes, scores, lam=cfg.lam, min_tokens=cfg.min_block_tokens, max_tokens=cfg.max_block_tokens)
        works = [text[units[a].start : units[b].end] for a, b in seg.blocks]
        summaries, rounds = await self.compress_blocks(sample.problem, works, usage)
        body = "\n".join(
            format_block(escape_special(w), escape_special(s)) for w, s in zip(works, summaries, strict=True)
        )
        answer = sample.answer.strip()
        response = f"{wrap_think(body)}\n\n{answer}"
        block_tokens = [sum(sizes[a : b + 1]) for a, b in seg.blocks]
        summary_tokens = [self.count_tokens(s) for s in summaries]
        return {
            "id": sample.id,
            "kind": "reasoning",
            "problem": sample.problem,
            "response": response,
            "answer": answer,
            "domain": sample.domain,
            "source": sample.source,
            "sentences": sentences,
            "blocks": [[a, b] for a, b in seg.blocks],
            "block_summaries": summaries,
            "boundary_scores": scores,
            **self._judge_fields(rounds, summaries),
            "sentence_tokens": sizes,
            "block_tokens": block_tokens,
            "summary_tokens": summary_tokens,
            "compression": (sum(summary_tokens) / sum(block_tokens)) if sum(block_tokens) else 0.0,
            "meta": self._meta(
                usage, objective=seg.objective, mean_cut_score=seg.mean_score, cv=seg.cv, units=len(units)
            ),
        }

    async def annotate_reasoning_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`annotate_reasoning` on a raw input mapping."""
        return await self.annotate_reasoning(ReasoningSample.from_record(record, str(record.get("id", "0"))))

    async def annotate_agent(self, traj: AgentTrajectory) -> dict[str, Any]:
        """Annotate one agent trajectory: each action/observation turn is a block (no scoring or segmentation)."""
        usage = UsageStats()
        blocks = agent_blocks(traj.messages)
        works = [b.work for b in blocks]
        # The compressor sees the agent's stated intent too: it explains why a call was made.
        prompts = [
            f"(agent's reasoning before the call: {b.thought.strip()})\n{b.work}" if b.thought.strip() else b.work
            for b in blocks
        ]
        summaries, rounds = await self.compress_blocks(traj.problem, prompts, usage)
        messages = apply_mementos(traj.messages, blocks, summaries)
        sentences: list[str] = []
        spans: list[list[int]] = []
        for b in blocks:
            spans.append([len(sentences), len(sentences) + 1])
            sentences += [b.call_text, b.result_text]
        bscores = [0.0 if k % 2 == 0 else 3.0 for k in range(max(len(sentences) - 1, 0))]
        answer = final_answer(traj.messages)
        response = "".join(format_block(w, escape_special(s)) for w, s in zip(works, summaries, strict=True)) + answer
        sent_tokens = [self.count_tokens(s) for s in sentences]
        block_tokens = [self.count_tokens(w) for w in works]
        summary_tokens = [self.count_tokens(s) for s in summaries]
        return {
            "id": traj.id,
            "kind": "agent",
            "agent": traj.agent,
            "problem": traj.problem,
            "response": response,
            "answer": answer,
            "domain": "agent",
            "source": "agentchat",
            "sentences": sentences,
            "blocks": spans,
            "block_summaries": summaries,
            "boundary_scores": bscores,
            **self._judge_fields(rounds, summaries),
            "sentence_tokens": sent_tokens,
            "block_tokens": block_tokens,
            "summary_tokens": summary_tokens,
            "compression": (sum(summary_tokens) / sum(block_tokens)) if sum(block_tokens) else 0.0,
            # JSON strings, not nested lists: AssistantMessage.content is a string or a list of calls and tool
            # schemas are free-form, which Arrow (``datasets.load_dataset("json")``) cannot put in one column type.
            "messages": json.dumps(dump_messages(messages), ensure_ascii=False),
            "tools": json.dumps([dict(t) for t in traj.tools], ensure_ascii=False),
            "text": render(messages, traj.tools).text,
            "meta": self._meta(usage),
        }

    # --- runs --------------------------------------------------------------------------------------------------
    async def run(
        self,
        samples: Iterable[ReasoningSample | AgentTrajectory],
        out_path: str | Path,
        *,
        progress: bool = True,
        max_in_flight_samples: int | None = None,
    ) -> RunSummary:
        """Annotate every sample not yet in ``out_path`` and append the records (resumable, see module docstring)."""
        start = time.monotonic()
        out = Path(out_path)
        done = read_done_ids(out)
        todo = [s for s in samples if s.id not in done]
        summary = RunSummary(skipped=len(done))
        seen: set[str] = set()
        unique = []
        for s in todo:  # duplicate input ids: the first wins, like a resumed run would decide
            if s.id not in seen:
                seen.add(s.id)
                unique.append(s)
        gate = asyncio.Semaphore(max_in_flight_samples or max(2, 2 * self.config.concurrency))
        bar = progress_bar(len(unique), progress)
        out.parent.mkdir(parents=True, exist_ok=True)

        async def one(s: ReasoningSample | AgentTrajectory) -> None:
            async with gate:
                try:
                    if isinstance(s, AgentTrajectory):
                        rec = await self.annotate_agent(s)
                    else:
                        rec = await self.annotate_reasoning(s)
                except LLMCallError as e:
                    summary.failed[s.id] = str(e)
                    bar.update(1)
                    return
                # No await between serialising and the synced append: a cancellation can never tear a record.
                append_line(out, json.dumps(rec, ensure_ascii=False))
                summary.processed += 1
                bar.update(1)
                bar.set_postfix(calls=self.usage.calls, failed=len(summary.failed))

        try:
            await asyncio.gather(*(one(s) for s in unique))
        finally:
            bar.close()
        summary.usage = self.usage.as_dict(self.config.pricing)
        summary.elapsed_s = time.monotonic() - start
        summary.stats = summarize_records(read_records(out), tau=self.config.tau, rounds=self.config.rounds)
        return summary
