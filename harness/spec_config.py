"""A spec's values against the training config: TrainConfig's own checks, run when the spec is loaded
so that a bad value fails there rather than in a trial."""
from __future__ import annotations

from typing import Any

from models.config import TrainConfig
from models.errors import ConfigError

from .study_spec import StudySpec


def config_problem(spec: StudySpec) -> tuple[str, str] | None:
    """The dotted key of a value TrainConfig rejects and its message, or None. Checked: the fixed and
    budget values with each parameter at its first choice or low end, then each other choice and end."""
    base = {name: p.choices[0] if p.kind == "categorical" else p.low for name, p in spec.search_space.items()}
    sections = (("fixed", spec.fixed), ("budget", spec.budget), ("search_space", base))
    entries = [(f"{section}.{key}", key, value) for section, values in sections for key, value in values.items()]
    problem = _blame(entries)
    if problem:
        return problem
    values = {**spec.fixed, **spec.budget, **base}
    for name, p in spec.search_space.items():
        for value in (p.choices if p.kind == "categorical" else (p.low, p.high)):
            error = _rejection({**values, name: value})
            if error:
                return f"search_space.{name}", f"TrainConfig rejects {value!r}: {error}"
    return None


def _blame(entries: list[tuple[str, str, Any]]) -> tuple[str, str] | None:
    """Which of the (dotted key, field, value) entries, in file order, TrainConfig rejects, and why.

    Each value, last first, that the rejection does not need is dropped; what is left is the wrong
    value, or values that clash, of which the last is named (e.g. val_epoch_len after val_vi_len)."""
    error = _rejection(_values(entries))
    if not error:
        return None
    needed = list(entries)
    for entry in reversed(entries):
        rest = [e for e in needed if e is not entry]
        if _rejection(_values(rest)):
            needed = rest
    *others, (dotted, _, _) = needed
    clash = f" (together with {', '.join(key for key, _, _ in others)})" if others else ""
    return dotted, _rejection(_values(needed)) + clash


def _values(entries: list[tuple[str, str, Any]]) -> dict[str, Any]:
    return {field: value for _, field, value in entries}


def _rejection(values: dict[str, Any]) -> str:
    """TrainConfig's message for these values (the others at their defaults), or "" if it accepts them."""
    try:
        TrainConfig.from_dict(values)
    except ConfigError as err:
        return str(err)
    return ""
