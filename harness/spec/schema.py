"""The schema of a study spec (studies/*.yaml): pydantic models that hold every rule a spec follows.

Shapes, types and ranges are field types; a rule between keys is a validator that raises `rule`,
naming the key at fault. The parameters are spec_params', the sampler and pruner spec_sampling's;
spec_errors turns the first error into the spec's one-line message; the values' check against the
training config is spec_config's.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from models.config import TrainConfig

from .params import Param
from .sampling import MedianPruner, Pruner, Sampler, TpeSampler
from .sections import Finite, Section, rule
from .values import ConfirmSpec, ParamSpec, StudySpec

# Metric -> the only direction that makes sense for it.
METRICS = {"val_psnr": "maximize"}
# What one trial may spend: kept apart from `fixed` so that a budget is read (and overridden) in one place.
BUDGET_KEYS = ("epochs", "partial", "train_vi_len", "val_epoch_len", "val_vi_len", "val_max_sequences")
# Set by the harness, not by a study: the data by the spec's `data`, the device by each worker.
NOT_IN_SPEC = ("data", "device", "loss_convention")
CONFIG_FIELDS = tuple(TrainConfig.model_fields)
# Where the discriminated unions sit: at this depth of an error's location pydantic names the member's tag.
UNION_DEPTH = {"search_space": 2, "sampler": 1, "pruner": 1}

# A study name becomes a folder (trials/NAME, reports/NAME, NAME.confirm) and an MLflow experiment: one
# path component that is neither "." nor "..", nor hidden, nor taken for an option, and short enough for any
# file system.
NAME_LENGTH = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _null_as(empty: type) -> BeforeValidator:
    """A bare `key:` (YAML null) reads as empty."""
    return BeforeValidator(lambda value: empty() if value is None else value)


# -- keys ------------------------------------------------------------------------------------------

def _config_key(key: str) -> str:
    if key in NOT_IN_SPEC:
        raise rule("not set by a study (data: the spec's `data`; device: each worker; "
                   "loss_convention: recorded, not chosen)")
    if key not in CONFIG_FIELDS:
        raise rule("unknown key: not a TrainConfig field")
    return key


def _not_budget_key(key: str) -> str:
    if key in BUDGET_KEYS:
        raise rule("is a budget key; set it under budget")
    return key


def _budget_key(key: str) -> str:
    if key not in BUDGET_KEYS:
        raise rule(f"unknown key (allowed: {', '.join(BUDGET_KEYS)})")
    return key


ConfigKey = Annotated[str, AfterValidator(_config_key)]
FixedKey = Annotated[str, AfterValidator(_config_key), AfterValidator(_not_budget_key)]
BudgetKey = Annotated[str, AfterValidator(_budget_key)]


# -- the spec --------------------------------------------------------------------------------------

class Objective(Section):
    metric: Literal["val_psnr"] = "val_psnr"  # the keys of METRICS
    direction: str = "maximize"  # absent: the metric's, which the spec takes from METRICS

    @model_validator(mode="after")
    def _direction_of_the_metric(self) -> Objective:
        wanted = METRICS[self.metric]
        if "direction" in self.model_fields_set and self.direction != wanted:
            raise rule(f"{self.metric} is to be {wanted}d, not {self.direction!r}", "direction")
        return self


class Confirm(Section):
    """The confirmation: the `top` search trials, the best of each value of `per`, and the reference, re-trained
    on `seeds` fresh seeds (racing: `min_seeds` first, then one at a time while the ranking is in doubt)."""
    top: int = Field(3, ge=0)
    per: str | None = None
    seeds: int = Field(5, ge=1)
    min_seeds: int = Field(2, ge=2)     # one seed gives no interval, so racing could stop nothing
    racing: bool = True

    @model_validator(mode="after")
    def _rounds_fit(self) -> Confirm:
        if self.min_seeds > self.seeds:
            raise rule(f"must be at most seeds ({self.seeds}), got {self.min_seeds}", "min_seeds")
        return self

    def to_spec(self) -> ConfirmSpec:
        return ConfirmSpec(self.top, self.per, self.seeds, self.min_seeds, self.racing)


def _plain_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise rule(f"{name!r} must consist of letters, digits, '_', '.' and '-', and start with a letter or digit")
    if len(name) > NAME_LENGTH:
        raise rule(f"must be at most {NAME_LENGTH} characters, got {len(name)}")
    return name


def _data(data: str) -> str:
    if not data:
        raise rule("empty; write 'synthetic' for the built-in set or a data root")
    return data


class Study(Section):
    """A whole spec; its fields' order is that of the keys an "unknown key" message allows."""
    name: Annotated[str, AfterValidator(_plain_name)]
    description: str = ""
    objective: Objective = Objective()
    n_trials: int = Field(ge=1)
    timeout: Annotated[Finite, Field(gt=0)] | None = None  # seconds
    data: Annotated[str, AfterValidator(_data)] = "synthetic"
    budget: dict[BudgetKey, Any]
    fixed: Annotated[dict[FixedKey, Any], _null_as(dict)] = {}
    search_space: dict[ConfigKey, Param]
    sampler: Sampler = TpeSampler()
    pruner: Pruner = MedianPruner()
    enqueue: Annotated[list[dict[str, Any]], _null_as(list)] = []
    retries: int = Field(2, ge=0)
    seeds: int = Field(1, ge=1)
    pack: int = Field(1, ge=1)
    confirm: Confirm | None = None

    @field_validator("search_space")
    @classmethod
    def _conditions_name_earlier_values(cls, space: dict[str, Param]) -> dict[str, Param]:
        if not space:
            raise rule("empty; a study searches at least one parameter")
        earlier: dict[str, ParamSpec] = {}
        for name, param in space.items():
            for ref, values in param.conditions().items():
                if ref not in earlier:
                    raise rule("names no parameter defined earlier in search_space", name, "when", ref)
                if not values:
                    raise rule("empty list of values", name, "when", ref)
                for value in values:
                    if not earlier[ref].contains(value):
                        raise rule(f"{value!r} is not a value of {ref} ({earlier[ref].describe()})", name, "when", ref)
            earlier[name] = param.to_param(name)
        return space

    @model_validator(mode="after")
    def _set_or_searched(self) -> Study:
        for name in self.search_space:
            for section, values in (("fixed", self.fixed), ("budget", self.budget)):
                if name in values:
                    raise rule(f"also set in {section}; a key is either set or searched", "search_space", name)
        return self

    @model_validator(mode="after")
    def _confirm_per_names_a_config_key(self) -> Study:
        per = self.confirm.per if self.confirm else None
        if per is not None and per not in self.search_space and per not in self.fixed and per not in CONFIG_FIELDS:
            raise rule("names no searched parameter or config key", "confirm", "per")
        return self

    @model_validator(mode="after")
    def _grid_space_is_finite(self) -> Study:
        if self.sampler.type != "grid":
            return self
        for name, param in self.search_space.items():
            if param.when:
                raise rule("the grid sampler cannot take conditional parameters: Optuna's GridSampler needs "
                           "every parameter in every trial", "search_space", name, "when")
            if param.type == "float" and param.step is None:
                raise rule("the grid sampler needs a step for a float parameter", "search_space", name, "step")
        return self

    @model_validator(mode="after")
    def _enqueued_trials_lie_in_the_space(self) -> Study:
        space = self.params()
        for i, trial in enumerate(self.enqueue):
            if not trial:
                raise rule("empty trial", "enqueue", i)
            for name, value in trial.items():
                if name not in space:
                    raise rule("not a parameter of search_space", "enqueue", i, name)
                if not space[name].contains(value):
                    raise rule(f"{value!r} is outside {space[name].describe()}", "enqueue", i, name)
                if not space[name].active(trial):
                    condition = ", ".join(f"{ref} in {list(v)}" for ref, v in space[name].when.items())
                    raise rule(f"given, but its condition ({condition}) does not hold in this trial",
                               "enqueue", i, name)
            missing = [name for name in space if name not in trial]
            if self.sampler.type == "grid" and missing:
                raise rule("the grid sampler needs every parameter in an enqueued trial (Optuna's GridSampler "
                           f"cannot fill in the rest); missing: {', '.join(missing)}", "enqueue", i)
        return self

    @staticmethod
    def _options(section: Sampler | Pruner) -> dict[str, Any]:
        """The sampler's or pruner's type and the options the spec sets: Optuna's defaults stay its own."""
        return {"type": section.type, **section.model_dump(exclude_unset=True)}

    def params(self) -> dict[str, ParamSpec]:
        return {name: param.to_param(name) for name, param in self.search_space.items()}

    def to_spec(self, path: Path) -> StudySpec:
        space = self.params()
        floats = {name for name, p in space.items() if p.kind == "float"}  # an enqueued 1 is then 1.0
        return StudySpec(
            name=self.name, description=self.description, path=path, metric=self.objective.metric,
            direction=METRICS[self.objective.metric], n_trials=self.n_trials, timeout=self.timeout,
            budget=dict(self.budget), data=None if self.data == "synthetic" else self.data, fixed=dict(self.fixed),
            search_space=space, sampler={**self._options(self.sampler), "seed": self.sampler.seed},
            pruner=self._options(self.pruner),
            enqueue=tuple({k: float(v) if k in floats else v for k, v in trial.items()} for trial in self.enqueue),
            retries=self.retries, seeds=self.seeds, pack=self.pack,
            confirm=self.confirm.to_spec() if self.confirm else None,
        )
