"""How a run's YAML and JSON are written: configs as YAML, NaN and inf as JSON's null."""
from __future__ import annotations

import math
from pathlib import Path

import yaml


def write_config(config_dict: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_dict, sort_keys=False))


def json_safe(obj: object) -> object:
    """NaN and inf are not JSON: write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    return obj
