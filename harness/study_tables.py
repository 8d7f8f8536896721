"""Studies and their trials as pandas tables, read from the Optuna storage."""
from __future__ import annotations

import math

import optuna
import pandas as pd
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from .stores import Stores
from .sweep import STATES, best_trial, open_storage, state_counts


class UnknownStudy(ValueError):
    pass


def load_existing_study(stores: Stores, name: str) -> optuna.Study:
    """The study called `name`; a clear error listing the storage's studies when there is none."""
    storage = open_storage(stores)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise UnknownStudy(f"--study {name}: no such study in {stores.runs_dir if 'sqlite' in stores.storage_url else 'the storage'} "
                           f"(studies there: {known})")
    return optuna.load_study(study_name=name, storage=storage)


def studies_table(stores: Stores) -> pd.DataFrame:
    """One row per study: trial counts by state and the best value."""
    storage = open_storage(stores)
    rows = []
    for name in sorted(optuna.get_all_study_names(storage)):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        best = best_trial(trials)
        starts = [t.datetime_start for t in trials if t.datetime_start]
        rows.append({"study": name, "trials": len(trials), **state_counts(trials),
                     "best_psnr": best.value if best else math.nan,
                     "best_trial": best.number if best else None,
                     "started": min(starts).strftime("%Y-%m-%d %H:%M") if starts else ""})
    return pd.DataFrame(rows, columns=["study", "trials", *(state.name for state in STATES), "best_psnr",
                                       "best_trial", "started"])


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, params, final and best per-epoch PSNR, epochs, duration, MLflow run,
    and the gain over the study's reference trial (its first enqueued one)."""
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({name for t in trials for name in t.params})
    reference = next((t for t in trials if t.user_attrs.get("enqueued") == "reference"
                      and t.state == TrialState.COMPLETE), None)
    retried_as = {history[-1]: t.number for t in trials
                  if (history := RetryHeartbeatStaleTrialCallback.retry_history(t))}
    rows = []
    for t in trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else math.nan
        value = t.value if t.state == TrialState.COMPLETE else math.nan
        rows.append({
            "trial": t.number, "state": t.state.name,
            **{name: t.params.get(name) for name in param_names},
            "final_psnr": value,
            "gain_vs_reference": value - reference.value if reference else math.nan,
            "best_epoch_psnr": _number(t.user_attrs.get("best_val_psnr")),
            "epochs_run": t.user_attrs.get("epochs_run"),
            "duration_s": round(duration, 1),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id", ""),
            "note": _note(t, retried_as.get(t.number)),
        })
    return pd.DataFrame(rows)


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def _note(trial: optuna.trial.FrozenTrial, retried_as: int | None) -> str:
    """Reference trial, retries and resumes, why a trial failed."""
    parts = []
    if trial.user_attrs.get("enqueued") == "reference":
        parts.append("reference")
    history = RetryHeartbeatStaleTrialCallback.retry_history(trial)
    if history:
        resumed = trial.user_attrs.get("resumed_epochs")
        parts.append(f"retry of trial {history[-1]}" + (f", resumed after epoch {resumed - 1}" if resumed else ""))
    if trial.state == TrialState.FAIL:
        # Only a trial whose worker died has no reason: the objective records every other failure.
        parts.append(str(trial.user_attrs.get("fail_reason") or "worker lost: no heartbeat")[:120])
    if retried_as is not None:
        parts.append(f"retried as trial {retried_as}")
    return "; ".join(parts)
