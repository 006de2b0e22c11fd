"""A wrapping model client that gives a sawtooth context to components without a ``model_context`` parameter."""

from ._client import MementoContextClient, MementoContextClientConfig

__all__ = ["MementoContextClient", "MementoContextClientConfig"]
