"""A study's spec fingerprint: a hash of what makes its trials comparable (data, budget, fixed
values, metric, seeds, search space), recorded on the study (as user attrs) with the version of its form.

Each version's form is frozen: a stored study is checked with the version it recorded, so changing
how a spec is loaded or represented never turns away a study created from the same spec.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Mapping

from .values import ParamSpec, StudySpec

FINGERPRINT_ATTR = "spec_fingerprint"
VERSION_ATTR = "spec_fingerprint_version"
CURRENT_VERSION = 2


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _v1_param_repr(param: ParamSpec) -> str:
    """The repr of the frozen ParamSpec dataclass that version 1 hashed, rebuilt from its values."""
    when = {ref: tuple(values) for ref, values in param.when.items()}
    return (f"ParamSpec(name={param.name!r}, kind={param.kind!r}, choices={tuple(param.choices)!r}, "
            f"low={param.low!r}, high={param.high!r}, step={param.step!r}, log={param.log!r}, when={when!r})")


def fingerprint_v1(spec: StudySpec) -> str:
    """Version 1 (studies created up to 2026-12), kept to check them: each parameter's class repr."""
    parts: dict[str, Any] = {"data": spec.data, "budget": spec.budget, "fixed": spec.fixed, "metric": spec.metric,
                             "space": {name: _v1_param_repr(param) for name, param in spec.search_space.items()}}
    if spec.seeds != 1:     # absent for one seed, so studies created before seeds existed still match
        parts["seeds"] = spec.seeds
    return _digest(json.dumps(parts, sort_keys=True, default=str))


def _bound(param: ParamSpec, value: float | int | None) -> float | int | None:
    # A float range from 1 to 2 is the one from 1.0 to 2.0, however the loader typed the bounds.
    return float(value) if value is not None and param.kind == "float" else value


def _param_values(param: ParamSpec) -> dict[str, Any]:
    return {"name": param.name, "kind": param.kind, "choices": list(param.choices),
            "low": _bound(param, param.low), "high": _bound(param, param.high), "step": _bound(param, param.step),
            "log": bool(param.log), "when": {ref: list(values) for ref, values in param.when.items()}}


def canonical_form(spec: StudySpec) -> dict[str, Any]:
    """Version 2: the spec's result-relevant sections as plain JSON values, never a class's repr."""
    return {"version": 2, "data": spec.data, "budget": dict(spec.budget), "fixed": dict(spec.fixed),
            "metric": spec.metric, "seeds": spec.seeds,
            "space": {name: _param_values(param) for name, param in spec.search_space.items()}}


def fingerprint_v2(spec: StudySpec) -> str:
    return _digest(json.dumps(canonical_form(spec), sort_keys=True, separators=(",", ":"), allow_nan=False))


FINGERPRINTS: dict[int, Callable[[StudySpec], str]] = {1: fingerprint_v1, 2: fingerprint_v2}


def spec_fingerprint(spec: StudySpec) -> str:
    """The current version's fingerprint of `spec`."""
    return FINGERPRINTS[CURRENT_VERSION](spec)


def fingerprint_attrs(spec: StudySpec) -> dict[str, Any]:
    """The study attrs that record `spec`'s fingerprint, in the current version."""
    return {FINGERPRINT_ATTR: spec_fingerprint(spec), VERSION_ATTR: CURRENT_VERSION}


def spec_matches(attrs: Mapping[str, Any], spec: StudySpec) -> bool:
    """Whether `spec` may continue the study whose user attrs are `attrs`: true when its recorded
    fingerprint, in the version it was recorded with (1 when unstated), is the spec's, or when it
    recorded none (created before fingerprints). A version this code does not know is unproven."""
    recorded = attrs.get(FINGERPRINT_ATTR)
    if recorded is None:
        return True
    fingerprint = FINGERPRINTS.get(attrs.get(VERSION_ATTR, 1))
    return fingerprint is not None and fingerprint(spec) == recorded


def recorded_in_older_version(attrs: Mapping[str, Any]) -> bool:
    """The study recorded a fingerprint in a version before the current one (rewrite it once matched)."""
    return FINGERPRINT_ATTR in attrs and attrs.get(VERSION_ATTR, 1) != CURRENT_VERSION
