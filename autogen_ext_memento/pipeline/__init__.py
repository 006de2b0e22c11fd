"""The data pipeline: OpenMementos-style block/memento annotation of reasoning traces and AgentChat trajectories."""

from ._agent import (
    AgentBlock,
    AgentTrajectory,
    agent_blocks,
    apply_mementos,
    closure_text,
    dump_messages,
    final_answer,
    llm_messages,
    load_agent_inputs,
    messages_from_state,
    messages_from_task_result,
    trajectories_from_record,
)
from ._config import PipelineConfig, ReasoningSample
from ._heuristic import HeuristicChatCompletionClient
from ._heuristic_rules import HeuristicClientConfig, HeuristicRoles
from ._io import read_done_ids, read_records
from ._llm import LLMCallError, LLMRunner, ParseError, Pricing, UsageStats
from ._llm_roles import LLMRoles
from ._pipeline import AnnotationPipeline
from ._prompts import PROMPTS, Verdict, fill, load_prompt, parse_boundary_scores, parse_summaries, parse_verdict
from ._report import RunSummary, summarize_records
from ._roles import BoundaryScorer, JudgedMemento, MementoCompressor, MementoJudge
from ._samples import (
    SAMPLE_AGENTCHAT,
    SAMPLE_REASONING,
    load_reasoning_inputs,
    record_sample_agentchat_run,
    sample_path,
)
from ._segment import Segmentation, brute_force_segment, objective, segment
from ._split import TokenCounter, Unit, is_math, regex_token_count, split_units
from ._stages import AnnotationStages, score_windows

__all__ = [
    "PROMPTS",
    "SAMPLE_AGENTCHAT",
    "SAMPLE_REASONING",
    "AgentBlock",
    "AgentTrajectory",
    "AnnotationPipeline",
    "AnnotationStages",
    "BoundaryScorer",
    "HeuristicChatCompletionClient",
    "HeuristicClientConfig",
    "HeuristicRoles",
    "JudgedMemento",
    "LLMCallError",
    "LLMRoles",
    "LLMRunner",
    "MementoCompressor",
    "MementoJudge",
    "ParseError",
    "PipelineConfig",
    "Pricing",
    "ReasoningSample",
    "RunSummary",
    "Segmentation",
    "TokenCounter",
    "Unit",
    "UsageStats",
    "Verdict",
    "agent_blocks",
    "apply_mementos",
    "brute_force_segment",
    "closure_text",
    "dump_messages",
    "fill",
    "final_answer",
    "is_math",
    "llm_messages",
    "load_agent_inputs",
    "load_prompt",
    "load_reasoning_inputs",
    "messages_from_state",
    "messages_from_task_result",
    "objective",
    "parse_boundary_scores",
    "parse_summaries",
    "parse_verdict",
    "read_done_ids",
    "read_records",
    "record_sample_agentchat_run",
    "regex_token_count",
    "sample_path",
    "score_windows",
    "segment",
    "split_units",
    "summarize_records",
    "trajectories_from_record",
]
