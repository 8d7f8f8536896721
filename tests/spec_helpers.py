"""Helpers of the study-spec tests: a small valid spec, and writing it with one thing broken."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

DELETE = object()  # as a value in `changes`: remove the key


def base_spec() -> dict:
    """A small valid spec with a conditional parameter; the bad-spec cases each break one thing in it."""
    return {
        "name": "t",
        "n_trials": 4,
        "budget": {"epochs": 2, "val_vi_len": 32},
        "fixed": {"batch_size": 2},
        "search_space": {
            "kl_anneal_type": {"type": "categorical", "choices": ["None", "Cyclical"]},
            "kl_anneal_cycle": {"type": "int", "low": 1, "high": 10, "when": {"kl_anneal_type": ["Cyclical"]}},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        },
        "enqueue": [{"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 10, "lr": 0.001}],
    }


def write_spec(tmp_path: Path, spec: dict, name: str = "t") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def set_path(spec: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        spec = spec[key]
    if value is DELETE:
        del spec[path[-1]]
    else:
        spec[path[-1]] = value


def changed_spec(tmp_path: Path, changes: dict[tuple, object]) -> Path:
    """base_spec() with each {key path: value} of `changes` applied, written to a file."""
    raw = copy.deepcopy(base_spec())
    for path, value in changes.items():
        set_path(raw, path, value)
    return write_spec(tmp_path, raw)
