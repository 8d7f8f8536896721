"""Declarative study specs: find and load a study's YAML into a checked StudySpec.

A spec states the question (the search space), what one trial may spend (the
budget), the sampler and pruner, and the trials enqueued first (the lab's
defaults as the reference). Every problem is found when the spec is loaded,
before any worker trains, and reported as one line naming the file and the key:
the schema's rules are in harness/spec_schema.py, the check against the training
config in harness/spec_config.py, the Optuna side in harness/search.py.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from models.errors import HarnessError

from .search import PerTrialSeedSampler, make_pruner, make_sampler, suggest_params, trial_seed
from .spec_config import config_problem
from .spec_errors import first_problem
from .spec_schema import BUDGET_KEYS, Study
from .study_spec import ParamSpec, StudySpec, train_values

# The surface the sweep, the CLI and the benchmarks use; its parts live in the modules imported above.
__all__ = ["BUDGET_KEYS", "ParamSpec", "PerTrialSeedSampler", "SpecError", "StudySpec", "available_studies",
           "load_study_spec", "make_pruner", "make_sampler", "studies_dir", "suggest_params", "train_values",
           "trial_seed"]


class SpecError(HarnessError):
    """A study spec is wrong; the message is one line, "<file>: <key>: what is wrong"."""


def studies_dir() -> Path:
    """Where study names are looked up: $HARNESS_STUDIES_DIR, else the repository's studies/."""
    env = os.environ.get("HARNESS_STUDIES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "studies"


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
