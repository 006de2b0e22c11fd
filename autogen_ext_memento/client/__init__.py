"""The memento model client: an AutoGen ``ChatCompletionClient`` driving a memento backend, one session per agent."""

from ._memento_client import MementoChatCompletionClient
from ._options import DEFAULT_MODEL_INFO, MementoChatCompletionClientConfig
from ._sessions import MementoChatCompletionClientState

__all__ = [
    "DEFAULT_MODEL_INFO",
    "MementoChatCompletionClient",
    "MementoChatCompletionClientConfig",
    "MementoChatCompletionClientState",
]
