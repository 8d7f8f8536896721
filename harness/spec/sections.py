"""The building blocks of the study-spec schema: a strict section of known keys, and a rule's error."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

Finite = Annotated[float, Field(allow_inf_nan=False)]


def rule(message: str, *at: str | int) -> PydanticCustomError:
    """A broken rule. Pydantic places a validator's error at its model or field; `at` is the key below."""
    return PydanticCustomError("spec_rule", "{message}", {"message": message, "at": at})


class Section(BaseModel):
    """A mapping of known keys. Strict: YAML's `true` is no 1, nor "4" a number."""
    model_config = ConfigDict(strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # pydantic's extra="forbid", but the message says which keys are allowed
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise rule(f"unknown key (allowed: {', '.join(cls.model_fields)})", key)
        return data
