"""Helpers of the sweep tests: run the CLI in a subprocess, write a tiny study spec, read both stores."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import yaml
from mlflow import MlflowClient

from harness.store.locations import MLFLOW_DB, resolve_stores

TRIAL_ARTIFACTS = {"loss.png", "schedules.png", "psnr_per_frame.png", "rollout.gif", "config.yaml",
                   "metrics.csv", "metrics.json", "psnr_per_frame.csv"}


def harness(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `harness ARGS` to completion; `env` adds to this process's environment."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def study(runs: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=resolve_stores(runs).storage_url)


def mlflow_runs(runs: Path, name: str) -> tuple[object, list, list]:
    client = MlflowClient(tracking_uri=resolve_stores(runs).tracking_uri)
    experiment = client.get_experiment_by_name(name)
    all_runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in all_runs if r.data.tags.get("harness.role") == "study"]
    trials = [r for r in all_runs if r.data.tags.get("harness.role") == "trial"]
    return client, parents, trials


def artifact_names(client, run_id: str, folder: str | None = None) -> set[str]:
    """Every artifact file of a run, by its path in the run, at any depth."""
    names = set()
    for entry in client.list_artifacts(run_id, folder):
        names |= artifact_names(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return names


def new_runs(folder: Path, mlflow_template: Path) -> Path:
    """`folder`, made a runs folder whose MLflow store already has its tables (a copy of the session's
    migrated store, tests/conftest.py): creating them takes a sweep's process seconds, every time."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(mlflow_template, folder / MLFLOW_DB)
    return folder


def write_spec(path: Path, data_root: Path, **changes) -> Path:
    """A spec on the tiny test data set; `changes` replace top-level keys."""
    spec = {
        "name": path.stem, "n_trials": 2, "data": str(data_root),
        "budget": {"epochs": 2, "train_vi_len": 4, "partial": 0.25, "val_epoch_len": 6, "val_vi_len": 24,
                   "val_max_sequences": 1},
        "fixed": {"f_dim": 16, "l_dim": 8, "n_dim": 4, "d_out_dim": 16, "batch_size": 4, "baselines": False},
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 5e-3, "log": True}},
        "sampler": {"type": "random", "seed": 0},
        **changes,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
