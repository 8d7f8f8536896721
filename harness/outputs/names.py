"""The names of the files a training run leaves in its folder, and how its YAML and JSON are written.

Apart from `run_outputs` (which writes them during training and needs the trainer, so torch) so
that commands reading a finished run or a store name and write them without importing torch.
"""
from __future__ import annotations

import math
from pathlib import Path

import yaml

CONFIG_FILE = "config.yaml"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
PSNR_CSV = "psnr_per_frame.csv"
LOSS_PNG = "loss.png"
SCHEDULES_PNG = "schedules.png"
PSNR_PNG = "psnr_per_frame.png"
ROLLOUT_GIF = "rollout.gif"
ERROR_FILE = "error.txt"       # the traceback of a trial that ended in an error


def write_config(config_dict: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_dict, sort_keys=False))


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def json_safe(obj: object) -> object:
    """NaN and inf are not JSON: write them as null."""
    if isinstance(obj, float):
        return _json_number(obj)
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    return obj
