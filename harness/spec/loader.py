"""Declarative study specs: find and load a study's YAML into a checked StudySpec.

A spec states the question (the search space), what one trial may spend (the
budget), the sampler and pruner, and the trials enqueued first (the lab's
defaults as the reference). Every problem is found when the spec is loaded,
before any worker trains, and reported as one line naming the file and the key:
the schema's rules are in schema.py, the check against the training config in
config_check.py; the Optuna side is the worker's (harness/worker/search.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from models.errors import HarnessError

from .config_check import config_problem
from .messages import first_problem
from .schema import Study
from .values import StudySpec


class SpecError(HarnessError):
    """A study spec is wrong; the message is one line, "<file>: <key>: what is wrong"."""


def studies_dir() -> Path:
    """Where study names are looked up: $HARNESS_STUDIES_DIR, else the repository's studies/."""
    env = os.environ.get("HARNESS_STUDIES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "studies"


def available_studies() -> list[str]:
    return sorted(p.stem for p in studies_dir().glob("*.yaml"))


def load_study_spec(name_or_path: str | Path) -> StudySpec:
    """Load a spec from a file path, or by name from studies_dir(); raise SpecError on any problem."""
    path = _spec_file(name_or_path)
    raw = _parsed(path)
    try:
        spec = Study.model_validate(raw).to_spec(path)
    except ValidationError as err:
        key, message = first_problem(err)
        raise SpecError(f"{path}: {key}: {message}") from None
    problem = config_problem(spec)
    if problem:
        raise SpecError(f"{path}: {problem[0]}: {problem[1]}")
    return spec


def _spec_file(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:  # meant as a path, not a name
        raise SpecError(f"{path}: no such file")
    path = studies_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        available = ", ".join(available_studies()) or "none"
        raise SpecError(f"{name_or_path}: unknown study (neither a file nor a name in {studies_dir()}); "
                        f"available: {available}")
    return path


def _parsed(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot read the file: {err}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
