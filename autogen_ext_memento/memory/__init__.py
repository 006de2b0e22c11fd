"""Team-level memento memory that survives agent resets (an AutoGen ``Memory``)."""

from ._memory import MEMORY_HEADER, MEMORY_SOURCE, MementoMemory, MementoMemoryConfig, MemoryHost

__all__ = ["MEMORY_HEADER", "MEMORY_SOURCE", "MementoMemory", "MementoMemoryConfig", "MemoryHost"]
