"""Declarative study specs: load and check a study's YAML, and turn it into Optuna objects.

A spec states the question (the search space), what one trial may spend (the
budget), the sampler and pruner, and the trials enqueued first (the lab's
defaults as the reference). Every problem is found when the spec is loaded,
before any worker trains, and reported as one line naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from models.config import TrainConfig
from models.errors import ConfigError, HarnessError

from .search import PerTrialSeedSampler, make_pruner, make_sampler, suggest_params, trial_seed
from .study_spec import ParamSpec, StudySpec, train_values

# The surface the sweep, the CLI and the benchmarks use; its parts live in the modules imported above.
__all__ = ["BUDGET_KEYS", "ParamSpec", "PerTrialSeedSampler", "SpecError", "StudySpec", "available_studies",
           "load_study_spec", "make_pruner", "make_sampler", "studies_dir", "suggest_params", "train_values",
           "trial_seed"]

# Metric -> the only direction that makes sense for it.
METRICS = {"val_psnr": "maximize"}
# What one trial may spend: kept apart from `fixed` so that a budget is read (and overridden) in one place.
BUDGET_KEYS = ("epochs", "partial", "train_vi_len", "val_epoch_len", "val_vi_len", "val_max_sequences")
# Set by the harness, not by a study: the data by the spec's `data`, the device by each worker.
NOT_IN_SPEC = ("data", "device", "loss_convention")
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))

_TOP_KEYS = ("name", "description", "objective", "n_trials", "timeout", "data", "budget", "fixed",
             "search_space", "sampler", "pruner", "enqueue", "retries", "seeds")
_REQUIRED_TOP_KEYS = ("name", "n_trials", "budget", "search_space")
_PARAM_FIELDS = {
    "categorical": ("type", "choices", "when"),
    "int": ("type", "low", "high", "step", "log", "when"),
    "float": ("type", "low", "high", "step", "log", "when"),
}
_SAMPLER_OPTIONS = {"tpe": ("seed", "n_startup_trials", "multivariate"), "random": ("seed",), "grid": ("seed",)}
_PRUNER_OPTIONS = {
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor"),
    "threshold": ("lower", "upper", "n_warmup_steps"),
    "none": (),
}
# Option -> (value kind, minimum); the minima are those Optuna's constructors enforce.
_OPTION_RULES: dict[str, tuple[str, int | None]] = {
    "seed": ("int", 0), "n_startup_trials": ("int", 0), "multivariate": ("bool", None),
    "n_warmup_steps": ("int", 0), "interval_steps": ("int", 1),
    "min_resource": ("int", 1), "max_resource": ("int_or_auto", 1), "reduction_factor": ("int", 2),
    "lower": ("number", None), "upper": ("number", None),
}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SCALAR = (str, int, float, bool, type(None))  # what Optuna's categorical choices may be


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
    path = Path(name_or_path)
    if not path.is_file():
        if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:  # meant as a path, not a name
            raise SpecError(f"{path}: no such file")
        path = studies_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            available = ", ".join(available_studies()) or "none"
            raise SpecError(f"{name_or_path}: unknown study (neither a file nor a name in {studies_dir()}); "
                            f"available: {available}")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot read the file: {err}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    return _Reader(path).spec(raw)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


class _Reader:
    """Checks a parsed spec; every error names the file and the dotted key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, what: str) -> SpecError:
        return SpecError(f"{self.path}: {key}: {what}")

    # -- values -----------------------------------------------------------------
    def mapping(self, value: Any, key: str) -> dict:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping, got {_type(value)}")
        return value

    def keys(self, mapping: dict, key: str, allowed: tuple, required: tuple = ()) -> None:
        for k in mapping:
            if k not in allowed:
                raise self.error(_join(key, k), f"unknown key (allowed: {', '.join(allowed)})")
        for k in required:
            if k not in mapping:
                raise self.error(_join(key, k), "missing")

    def integer(self, value: Any, key: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_type(value)}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {_type(value)}")
        if not math.isfinite(value):
            raise self.error(key, f"must be finite, got {value}")
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_type(value)}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_type(value)}")
        return value

    # -- sections ---------------------------------------------------------------
    def spec(self, raw: Any) -> StudySpec:
        if not isinstance(raw, dict):
            raise SpecError(f"{self.path}: top level: expected a mapping of spec keys, got {_type(raw)}")
        self.keys(raw, "", _TOP_KEYS, _REQUIRED_TOP_KEYS)
        name = self.string(raw["name"], "name")
        if not _NAME.fullmatch(name):
            raise self.error("name", f"{name!r} must consist of letters, digits, '_', '.' and '-'")
        metric, direction = self.objective(raw.get("objective", {}))
        timeout = raw.get("timeout")
        if timeout is not None and self.number(timeout, "timeout") <= 0:
            raise self.error("timeout", f"must be > 0 seconds, got {timeout}")
        data = self.string(raw.get("data", "synthetic"), "data")
        if not data:
            raise self.error("data", "empty; write 'synthetic' for the built-in set or a data root")
        budget = self.mapping(raw["budget"], "budget")
        self.keys(budget, "budget", BUDGET_KEYS)
        fixed = self.mapping(_or_empty(raw, "fixed", {}), "fixed")
        for k in fixed:
            self.config_field(k, "fixed")
            if k in BUDGET_KEYS:
                raise self.error(f"fixed.{k}", "is a budget key; set it under budget")
        space = self.search_space(raw["search_space"], fixed, budget)
        sampler = self.options(raw.get("sampler", {"type": "tpe"}), "sampler", _SAMPLER_OPTIONS)
        sampler.setdefault("seed", 0)
        pruner = self.options(raw.get("pruner", {"type": "median"}), "pruner", _PRUNER_OPTIONS)
        if pruner["type"] == "threshold":
            self.threshold(pruner)
        grid = sampler["type"] == "grid"
        if grid:
            self.grid_space(space)
        spec = StudySpec(
            name=name, description=self.string(raw.get("description", ""), "description"), path=self.path,
            metric=metric, direction=direction, n_trials=self.integer(raw["n_trials"], "n_trials", 1),
            timeout=None if timeout is None else float(timeout), budget=dict(budget),
            data=None if data == "synthetic" else data, fixed=dict(fixed), search_space=space,
            sampler=sampler, pruner=pruner, enqueue=self.enqueue(_or_empty(raw, "enqueue", []), space, grid),
            retries=self.integer(raw.get("retries", 2), "retries", 0),
            seeds=self.integer(raw.get("seeds", 1), "seeds", 1),
        )
        self.train_config(spec)
        return spec

    def objective(self, raw: Any) -> tuple[str, str]:
        raw = self.mapping(raw, "objective")
        self.keys(raw, "objective", ("metric", "direction"))
        metric = self.string(raw.get("metric", "val_psnr"), "objective.metric")
        if metric not in METRICS:
            raise self.error("objective.metric", f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
        direction = self.string(raw.get("direction", METRICS[metric]), "objective.direction")
        if direction != METRICS[metric]:
            raise self.error("objective.direction", f"{metric} is to be {METRICS[metric]}d, not {direction!r}")
        return metric, direction

    def config_field(self, name: Any, section: str) -> None:
        key = _join(section, name)
        if name in NOT_IN_SPEC:
            raise self.error(key, "not set by a study (data: the spec's `data`; device: each worker; "
                                  "loss_convention: recorded, not chosen)")
        if name not in CONFIG_FIELDS:
            raise self.error(key, "unknown key: not a TrainConfig field")

    def search_space(self, raw: Any, fixed: dict, budget: dict) -> dict[str, ParamSpec]:
        raw = self.mapping(raw, "search_space")
        if not raw:
            raise self.error("search_space", "empty; a study searches at least one parameter")
        space: dict[str, ParamSpec] = {}
        for name, param in raw.items():
            self.config_field(name, "search_space")
            for section, values in (("fixed", fixed), ("budget", budget)):
                if name in values:
                    raise self.error(f"search_space.{name}", f"also set in {section}; a key is either set or searched")
            space[name] = self.param(name, param, space)
        return space

    def param(self, name: str, raw: Any, earlier: dict[str, ParamSpec]) -> ParamSpec:
        key = f"search_space.{name}"
        raw = self.mapping(raw, key)
        kind = raw.get("type")
        if kind not in _PARAM_FIELDS:
            raise self.error(f"{key}.type", f"expected one of {', '.join(_PARAM_FIELDS)}, got {kind!r}")
        required = ("choices",) if kind == "categorical" else ("low", "high")
        self.keys(raw, key, _PARAM_FIELDS[kind], required)
        when = self.when(raw.get("when", {}), f"{key}.when", earlier)
        if kind == "categorical":
            choices = raw["choices"]
            if not isinstance(choices, list) or not choices:
                raise self.error(f"{key}.choices", f"expected a non-empty list, got {choices!r}")
            for choice in choices:
                if not isinstance(choice, _SCALAR):
                    raise self.error(f"{key}.choices", f"choices must be scalars, got {_type(choice)}")
            return ParamSpec(name, kind, choices=tuple(choices), when=when)
        read = self.integer if kind == "int" else self.number
        low, high = read(raw["low"], f"{key}.low"), read(raw["high"], f"{key}.high")
        step = None if raw.get("step") is None else read(raw["step"], f"{key}.step")
        log = self.boolean(raw.get("log", False), f"{key}.log")
        if low >= high:
            raise self.error(f"{key}.low", f"empty range: low {low} >= high {high}")
        if log and low <= 0:
            raise self.error(f"{key}.low", f"a log range needs low > 0, got {low}")
        if step is not None and step <= 0:
            raise self.error(f"{key}.step", f"must be > 0, got {step}")
        if step is not None and log:
            raise self.error(f"{key}.step", "cannot be combined with log (Optuna samples a log range continuously)")
        return ParamSpec(name, kind, low=low, high=high, step=step, log=log, when=when)

    def when(self, raw: Any, key: str, earlier: dict[str, ParamSpec]) -> dict[str, tuple]:
        raw = self.mapping(raw, key)
        when: dict[str, tuple] = {}
        for ref, values in raw.items():
            ref_key = _join(key, ref)
            if ref not in earlier:
                raise self.error(ref_key, "names no parameter defined earlier in search_space")
            values = tuple(values) if isinstance(values, list) else (values,)
            if not values:
                raise self.error(ref_key, "empty list of values")
            for value in values:
                if not earlier[ref].contains(value):
                    raise self.error(ref_key, f"{value!r} is not a value of {ref} ({earlier[ref].describe()})")
            when[ref] = values
        return when

    def options(self, raw: Any, key: str, known: dict[str, tuple]) -> dict[str, Any]:
        raw = self.mapping(raw, key)
        kind = raw.get("type")
        if kind not in known:
            raise self.error(f"{key}.type", f"expected one of {', '.join(known)}, got {kind!r}")
        self.keys(raw, key, ("type",) + known[kind])
        options: dict[str, Any] = {"type": kind}
        for option, value in raw.items():
            if option == "type":
                continue
            rule, minimum = _OPTION_RULES[option]
            option_key = f"{key}.{option}"
            if rule == "bool":
                options[option] = self.boolean(value, option_key)
            elif rule == "number":
                options[option] = self.number(value, option_key)
            elif rule == "int_or_auto" and isinstance(value, str):
                if value != "auto":
                    raise self.error(option_key, f"expected an integer or 'auto', got {value!r}")
                options[option] = value
            else:
                options[option] = self.integer(value, option_key, minimum)
        return options

    def threshold(self, pruner: dict[str, Any]) -> None:
        if "lower" not in pruner and "upper" not in pruner:
            raise self.error("pruner.lower", "the threshold pruner needs lower, upper or both")
        if pruner.get("lower", -math.inf) >= pruner.get("upper", math.inf):
            raise self.error("pruner.lower", f"must be below upper, got {pruner['lower']} >= {pruner['upper']}")

    def grid_space(self, space: dict[str, ParamSpec]) -> None:
        for name, p in space.items():
            if p.when:
                raise self.error(f"search_space.{name}.when", "the grid sampler cannot take conditional parameters: "
                                 "Optuna's GridSampler needs every parameter in every trial")
            if p.kind == "float" and p.step is None:
                raise self.error(f"search_space.{name}.step", "the grid sampler needs a step for a float parameter")

    def enqueue(self, raw: Any, space: dict[str, ParamSpec], grid: bool) -> tuple[dict, ...]:
        if not isinstance(raw, list):
            raise self.error("enqueue", f"expected a list of trials, got {_type(raw)}")
        trials = []
        for i, trial in enumerate(raw):
            key = f"enqueue.{i}"
            trial = self.mapping(trial, key)
            if not trial:
                raise self.error(key, "empty trial")
            for name, value in trial.items():
                if name not in space:
                    raise self.error(_join(key, name), "not a parameter of search_space")
                if not space[name].contains(value):
                    raise self.error(_join(key, name), f"{value!r} is outside {space[name].describe()}")
                if not space[name].active(trial):
                    condition = ", ".join(f"{ref} in {list(v)}" for ref, v in space[name].when.items())
                    raise self.error(_join(key, name), f"given, but its condition ({condition}) does not hold "
                                                       "in this trial")
            missing = [name for name in space if name not in trial]
            if grid and missing:
                raise self.error(key, "the grid sampler needs every parameter in an enqueued trial "
                                      f"(Optuna's GridSampler cannot fill in the rest); missing: {', '.join(missing)}")
            trials.append({k: float(v) if space[k].kind == "float" else v for k, v in trial.items()})
        return tuple(trials)

    def train_config(self, spec: StudySpec) -> None:
        """Build TrainConfigs at the ends of the space, so a bad value fails here rather than in a trial."""
        base = {name: p.choices[0] if p.kind == "categorical" else p.low for name, p in spec.search_space.items()}
        values = train_values(spec, base)
        error = _config_error(values)
        if error:
            raise self.error(_rejected_key(spec, values), error)
        for name, p in spec.search_space.items():
            for value in (p.choices if p.kind == "categorical" else (p.low, p.high)):
                error = _config_error({**values, name: value})
                if error:
                    raise self.error(f"search_space.{name}", f"TrainConfig rejects {value!r}: {error}")


def _config_error(values: dict[str, Any]) -> str:
    try:
        TrainConfig.from_dict(values)
    except ConfigError as err:
        return str(err)
    return ""


def _valid(values: dict[str, Any]) -> bool:
    return not _config_error(values)


def _rejected_key(spec: StudySpec, values: dict[str, Any]) -> str:
    """The dotted key TrainConfig objects to: one wrong on its own, else one whose removal fixes the rest
    (of those, the key TrainConfig's message starts with, e.g. val_epoch_len rather than val_vi_len)."""
    keys = [(f"{section}.{k}", k) for section, names in
            (("fixed", spec.fixed), ("budget", spec.budget), ("search_space", spec.search_space)) for k in names]
    for dotted, k in keys:
        if not _valid({k: values[k]}):
            return dotted
    fixes = [(dotted, k) for dotted, k in keys if _valid({o: v for o, v in values.items() if o != k})]
    named = [dotted for dotted, k in fixes if _config_error(values).startswith(f"{k} ")]
    return (named or [dotted for dotted, _ in fixes] or ["fixed+budget"])[0]


def _or_empty(raw: dict, key: str, empty: Any) -> Any:
    """raw[key], where an absent key or a bare `key:` (YAML null) means empty."""
    value = raw.get(key)
    return empty if value is None else value


def _type(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"
