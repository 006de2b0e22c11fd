"""The fact-tracker agent: one ``AssistantAgent`` playing one episode (the benchmark, the serving bench, tests)."""

from __future__ import annotations

from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import ChatCompletionClient
from autogen_core.tools import FunctionTool

from ._fact_tracker import AGENT_NAME, SYSTEM_PROMPT, Episode, FactTrackerEnv


async def play_tracker(
    episode: Episode,
    client: ChatCompletionClient,
    *,
    tool: FunctionTool | None = None,
    model_context: ChatCompletionContext | None = None,
    stream: bool = False,
) -> str:
    """Run the fact-tracker ``AssistantAgent`` on ``episode`` and return its last text answer (``""`` if none).

    ``tool`` replaces the episode's page reader (e.g. one with latency); ``model_context`` is the agent's context.
    """
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import TextMessage

    agent = AssistantAgent(
        AGENT_NAME,
        model_client=client,
        tools=[tool if tool is not None else FactTrackerEnv(episode).tool()],
        system_message=SYSTEM_PROMPT,
        model_context=model_context,
        max_tool_iterations=len(episode.pages) + 2,
        model_client_stream=stream,
    )
    result = await agent.run(task=episode.goal_text)
    texts = [m.content for m in result.messages if isinstance(m, TextMessage) and m.source == AGENT_NAME]
    return texts[-1] if texts else ""
