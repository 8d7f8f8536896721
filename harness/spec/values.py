"""A loaded study spec: the frozen values the sweep reads (schema.py checks them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _member(value: Any, options: tuple) -> bool:
    """`value in options`, but True is not 1: a YAML bool and an int stay different values."""
    return any(value == option and isinstance(value, bool) == isinstance(option, bool) for option in options)


@dataclass(frozen=True)
class ParamSpec:
    """One searched TrainConfig field and its range."""
    name: str
    kind: str  # "categorical" | "int" | "float"
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    # Conditional parameter: suggested only when every named earlier parameter's value is in its tuple.
    when: dict[str, tuple] = field(default_factory=dict)

    def contains(self, value: Any) -> bool:
        """Whether a trial of this parameter can take `value` (used to check enqueued trials)."""
        if self.kind == "categorical":
            return _member(value, self.choices)
        numeric = int if self.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric) or not self.low <= value <= self.high:
            return False
        if self.step is None:
            return True
        k = (value - self.low) / self.step
        return abs(k - round(k)) < 1e-8  # Optuna's own tolerance for stepped floats

    def active(self, params: dict[str, Any]) -> bool:
        """Whether the `when` condition holds for the earlier parameters' values `params`."""
        return all(ref in params and _member(params[ref], values) for ref, values in self.when.items())

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"choices {list(self.choices)}"
        extra = (f", step {self.step}" if self.step is not None else "") + (", log" if self.log else "")
        return f"{self.kind} range [{self.low}, {self.high}]{extra}"


@dataclass(frozen=True)
class ConfirmSpec:
    """The confirmation after the search: which configurations, on how many fresh seeds, raced or not."""
    top: int                 # the best `top` search trials
    per: str | None          # and the best trial of each value of this config key
    seeds: int               # fresh seeds a candidate gets at most
    min_seeds: int           # in racing, the first round's seeds
    racing: bool             # False: every candidate gets every seed


@dataclass(frozen=True)
class StudySpec:
    """A loaded, checked study spec (see studies/*.yaml)."""
    name: str
    description: str
    path: Path
    metric: str  # "val_psnr": mean PSNR of the final validation rollout
    direction: str
    n_trials: int
    timeout: float | None  # seconds
    budget: dict[str, Any]
    data: str | None  # None: the built-in synthetic set
    fixed: dict[str, Any]
    search_space: dict[str, ParamSpec]  # in file order, which is the order of suggestion
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    enqueue: tuple[dict, ...]  # the first is the reference trial (the lab's defaults)
    retries: int  # how often a failed trial (dead worker) is retried
    seeds: int = 1  # trainings per trial, one per seed; the trial's value is their mean
    pack: int = 1  # models per batched pass (models.packing): a trial's seeds, and pack // seeds trials at once;
                   # not in the fingerprint
    confirm: ConfirmSpec | None = None  # None: the search's ranking stands unconfirmed; not in the fingerprint


def train_values(spec: StudySpec, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's TrainConfig values (for TrainConfig.from_dict), without the data, which the caller sets."""
    return {**spec.fixed, **spec.budget, **params}
