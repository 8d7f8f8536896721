"""The search space of a study spec: one model per kind of parameter, told apart by its `type`."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from .sections import Finite, Section, rule
from .values import ParamSpec

_SCALAR = (str, int, float, bool, type(None))  # what Optuna's categorical choices may be


class _Param(Section):
    """A searched parameter; `when` makes it conditional on earlier parameters' values."""
    type: str
    when: dict[str, Any] = {}

    def conditions(self) -> dict[str, tuple]:
        """`when` with each value as a tuple: a scalar is a one-value list."""
        return {ref: tuple(values) if isinstance(values, list) else (values,) for ref, values in self.when.items()}


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: Annotated[list[Any], Field(min_length=1)]

    @field_validator("choices")
    @classmethod
    def _scalars(cls, choices: list[Any]) -> list[Any]:
        for choice in choices:
            if not isinstance(choice, _SCALAR):
                raise rule(f"choices must be scalars, got {type(choice).__name__} {choice!r}")
        return choices

    def to_param(self, name: str) -> ParamSpec:
        return ParamSpec(name, "categorical", choices=tuple(self.choices), when=self.conditions())


class _Range(_Param):
    """low < high; a log range has low > 0 and no step (Optuna samples a log range continuously)."""
    low: float
    high: float
    step: float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _a_range(self) -> _Range:
        if self.low >= self.high:
            raise rule(f"empty range: low {self.low} >= high {self.high}", "low")
        if self.log and self.low <= 0:
            raise rule(f"a log range needs low > 0, got {self.low}", "low")
        if self.log and self.step is not None:
            raise rule("cannot be combined with log (Optuna samples a log range continuously)", "step")
        return self

    def to_param(self, name: str) -> ParamSpec:
        return ParamSpec(name, self.type, low=self.low, high=self.high, step=self.step, log=self.log,
                         when=self.conditions())


class IntParam(_Range):
    type: Literal["int"]
    low: int
    high: int
    step: Annotated[int, Field(gt=0)] | None = None


class FloatParam(_Range):
    type: Literal["float"]
    low: Finite
    high: Finite
    step: Annotated[Finite, Field(gt=0)] | None = None


Param = Annotated[CategoricalParam | IntParam | FloatParam, Field(discriminator="type")]
