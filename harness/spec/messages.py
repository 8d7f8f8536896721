"""Pydantic's validation errors in a study spec's words: the dotted key and what is wrong with it."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .schema import UNION_DEPTH

# Pydantic's error type -> the message; {got} is the value with its type, the other fields are the error's.
_MESSAGES = {
    "missing": "missing",
    "int_type": "expected an integer, got {got}",
    "float_type": "expected a number, got {got}",
    "bool_type": "expected true or false, got {got}",
    "string_type": "expected a string, got {got}",
    "dict_type": "expected a mapping, got {got}",
    "model_type": "expected a mapping, got {got}",
    "model_attributes_type": "expected a mapping, got {got}",
    "list_type": "expected a list, got {got}",
    "too_short": "expected a non-empty list, got {input!r}",
    "finite_number": "must be finite, got {input}",
    "greater_than": "must be > {gt:g}, got {input}",
    "greater_than_equal": "must be >= {ge:g}, got {input}",
    "literal_error": "expected {expected}, got {input!r}",
    "union_tag_invalid": "expected one of {tags}, got {tag!r}",
    "union_tag_not_found": "missing",
}


def first_problem(error: ValidationError) -> tuple[str, str]:
    """The dotted key and the message of pydantic's first error (a spec reports one problem at a time)."""
    detail = error.errors(include_url=False)[0]
    kind, ctx, value = detail["type"], detail.get("ctx", {}), detail["input"]
    key = _key(detail["loc"])
    if kind == "spec_rule":  # schema's own rule: its message, and the key below where pydantic put it
        return _dotted(key + list(ctx["at"])), ctx["message"]
    if kind.startswith("union_tag"):  # the member is chosen by `type`: that is the key at fault
        key.append("type")
        ctx = {**ctx, "tags": ctx.get("expected_tags", "").replace("'", ""), "tag": value.get("type")}
    template = _MESSAGES.get(kind)
    message = template.format(got=_got(value), input=value, **ctx) if template else detail["msg"]
    return _dotted(key), message


def _key(loc: tuple[str | int, ...]) -> list[str | int]:
    """The spec's key of pydantic's location: without the union's tag and the "[key]" of a mapping's key."""
    key = [part for part in loc if part != "[key]"]
    depth = UNION_DEPTH.get(key[0]) if key else None
    if depth is not None and len(key) > depth:
        del key[depth]
    return key


def _dotted(key: list[str | int]) -> str:
    return ".".join(map(str, key)) or "top level"


def _got(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"
