"""What the HTML study report reads from MLflow: each trial's curves, under the grouped metric keys or,
in a store written before them, the flat ones (names.metric_keys)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from harness.outputs.names import BASELINES, MODEL, curve_key, metric_keys
from harness.store.tracking import TRIAL_TAG, StudyTracker

from .tables import ANNEAL

# The per-epoch metrics the report draws, by their flat names (its tables' columns).
CURVE_KEYS = ("loss", "recon", "kl", "beta", "tfr", "val_psnr", "val_mse")


@dataclass
class TrialCurves:
    trial: FrozenTrial
    anneal: str                 # KL-annealing type of the trial (from its run's params)
    history: pd.DataFrame       # one row per epoch, columns epoch + CURVE_KEYS
    per_frame: list[float]      # PSNR per frame of its last validation rollout, from frame 1
    baselines: dict[str, list[float]]   # the same for the baselines it scored (repeat frame 0, untrained)
    figure: dict[str, list[float]]      # PSNR per frame over the figure: "model" and each baseline (masked data)


def trial_curves(tracker: StudyTracker, trial: FrozenTrial) -> TrialCurves | None:
    """The curves of the trial's MLflow run; None while the trial has no run of its own."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id or trial.state == TrialState.WAITING:
        return None
    client = tracker.client
    run = client.get_run(run_id)
    if run.data.tags.get(TRIAL_TAG) != str(trial.number):    # a retry that has not started its own run
        return None
    columns = {name: _history(tracker, run_id, name) for name in CURVE_KEYS}
    epochs = sorted(set().union(*(values.keys() for values in columns.values())))
    history = pd.DataFrame({"epoch": epochs, **{key: [columns[key].get(e, math.nan) for e in epochs]
                                                  for key in CURVE_KEYS}})
    per_frame = _series(tracker, run_id, curve_key(MODEL))
    baselines = {name: values for name in BASELINES if (values := _series(tracker, run_id, curve_key(name)))}
    figure = {name: values for name in (MODEL, *BASELINES)
              if (values := _series(tracker, run_id, curve_key(name, "figure")))}
    return TrialCurves(trial, run.data.params.get(ANNEAL, "?"), history, per_frame, baselines, figure)


def _history(tracker: StudyTracker, run_id: str, name: str) -> dict[int, float]:
    """A metric's values by step, under whichever of its keys the run has."""
    for key in metric_keys(name):
        history = tracker.client.get_metric_history(run_id, key)
        if history:
            return {m.step: m.value for m in history}
    return {}


def _series(tracker: StudyTracker, run_id: str, name: str) -> list[float]:
    """A per-frame series of a run, frame 1 first (frame 0 is given and not logged); gaps are NaN."""
    by_frame = _history(tracker, run_id, name)
    return [by_frame.get(frame, math.nan) for frame in range(1, max(by_frame, default=0) + 1)]
