"""A spec's values against the training config: TrainConfig's own checks, run when the spec is loaded
so that a bad value fails there rather than in a trial."""
from __future__ import annotations

from typing import Any

from models.config import TrainConfig
from models.errors import ConfigError

from .values import ParamSpec, StudySpec


def config_problem(spec: StudySpec) -> tuple[str, str] | None:
    """The dotted key of a value TrainConfig rejects and its message, or None. Checked: the fixed and
    budget values with each parameter at its first choice or low end, then each parameter at its first
    value, then at each other choice and end; each in a trial that can happen: the parameters its `when`
    names set to a value that activates it, and parameters whose `when` fails left out, as in a trial."""
    base = {name: _first(p) for name, p in spec.search_space.items()}
    sections = (("fixed", spec.fixed), ("budget", spec.budget), ("search_space", _suggested(spec, base)))
    entries = [(f"{section}.{key}", key, value) for section, values in sections for key, value in values.items()]
    problem = _blame(entries)
    if problem:
        return problem
    firsts = [(name, _first(p)) for name, p in spec.search_space.items()]
    others = [(name, value) for name, p in spec.search_space.items()
              for value in (p.choices[1:] if p.kind == "categorical" else (p.high,))]
    for name, value in firsts + others:
        params = _suggested(spec, {**base, **_activating(spec, name), name: value})
        error = _rejection({**spec.fixed, **spec.budget, **params})
        if error:
            return f"search_space.{name}", f"TrainConfig rejects {value!r}: {error}"
    return None


def _first(param: ParamSpec) -> Any:
    return param.choices[0] if param.kind == "categorical" else param.low


def _activating(spec: StudySpec, name: str) -> dict[str, Any]:
    """Values of the parameters that `name`'s `when` names (and theirs, in turn) that make it suggested."""
    values: dict[str, Any] = {}
    for ref, allowed in spec.search_space[name].when.items():
        values.update({**_activating(spec, ref), ref: allowed[0]})
    return values


def _suggested(spec: StudySpec, candidates: dict[str, Any]) -> dict[str, Any]:
    """The parameters a trial would hold if each took its value in `candidates`: in file order, those
    whose `when` holds for the ones before."""
    params: dict[str, Any] = {}
    for name, param in spec.search_space.items():
        if param.active(params):
            params[name] = candidates[name]
    return params


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
