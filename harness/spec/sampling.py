"""The sampler and the pruner of a study spec, each told apart by its `type`.

Only the options a spec sets reach Optuna; the defaults here are Optuna's."""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from .sections import Finite, Section, rule


class _Sampler(Section):
    type: str
    seed: int = Field(0, ge=0)


class TpeSampler(_Sampler):
    type: Literal["tpe"] = "tpe"
    n_startup_trials: int = Field(10, ge=0)
    multivariate: bool = False


class RandomSampler(_Sampler):
    type: Literal["random"] = "random"


class GridSampler(_Sampler):
    type: Literal["grid"] = "grid"


class MedianPruner(Section):
    type: Literal["median"] = "median"
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, ge=1)


class HyperbandPruner(Section):
    type: Literal["hyperband"] = "hyperband"
    min_resource: int = Field(1, ge=1)
    max_resource: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    reduction_factor: int = Field(3, ge=2)

    @field_validator("max_resource", mode="wrap")
    @classmethod
    def _int_or_auto(cls, value: Any, handler: Any) -> int | str:
        try:
            return handler(value)
        except ValueError:  # one message, not one per member of the union
            raise rule(f"expected an integer >= 1 or 'auto', got {value!r}") from None


class ThresholdPruner(Section):
    type: Literal["threshold"] = "threshold"
    lower: Finite = -math.inf  # no bound, as Optuna's None
    upper: Finite = math.inf
    n_warmup_steps: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdPruner:
        if not {"lower", "upper"} & self.model_fields_set:
            raise rule("the threshold pruner needs lower, upper or both", "lower")
        if self.lower >= self.upper:
            raise rule(f"must be below upper, got {self.lower} >= {self.upper}", "lower")
        return self


class NoPruner(Section):
    type: Literal["none"] = "none"


Sampler = Annotated[TpeSampler | RandomSampler | GridSampler, Field(discriminator="type")]
Pruner = Annotated[MedianPruner | HyperbandPruner | ThresholdPruner | NoPruner, Field(discriminator="type")]
