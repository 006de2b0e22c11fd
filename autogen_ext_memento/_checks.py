"""Constructor checks shared by every component: one source of rules (their pydantic Configs).

Every public constructor builds its Config (or the part of it that holds plain values) with :func:`build_config`
and reads its settings back from it, so a value the Config rejects is rejected at construction, with the same
rule, as a one-line ``ValueError`` that names the component, the field and the value.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text.removeprefix("Value error, ")


def build_config(model: type[M], owner: str, /, **values: Any) -> M:
    """``model(**values)``, with any validation error turned into a one-line ``ValueError`` naming ``owner``."""
    try:
        return model(**values)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            field = ".".join(str(p) for p in err.get("loc", ()))
            msg = _one_line(err.get("msg", "invalid"))
            if not field:  # a rule over several fields (model_post_init)
                parts.append(msg)
                continue
            shown = f"{field}={values[field]!r}" if field in values else field
            parts.append(f"{shown}: {msg}")
        raise ValueError(f"{owner}: " + "; ".join(parts)) from None
    except ValueError as e:  # raised by a model_post_init rule (one that spans several fields)
        raise ValueError(f"{owner}: {_one_line(str(e))}") from None


def validation_message(error: ValidationError) -> str:
    """One line naming every invalid field of a pydantic ``ValidationError`` and why it is invalid."""
    parts = []
    for err in error.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "value"
        parts.append(f"{loc}: {_one_line(str(err['msg']))}")
    return "; ".join(parts)


def require_type(
    value: Any, expected: type | tuple[type, ...], what: str, owner: str, *, optional: bool = True
) -> None:
    """Raise a one-line ``TypeError`` unless ``value`` is an instance of ``expected`` (or ``None`` if optional)."""
    if value is None and optional:
        return
    if not isinstance(value, expected):
        kinds = expected if isinstance(expected, tuple) else (expected,)
        names = " or ".join(k.__name__ for k in kinds)
        raise TypeError(f"{owner}: {what} must be a {names} instance, got {type(value).__name__} ({value!r:.60})")
