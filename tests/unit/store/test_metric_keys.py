"""A trial's metrics go to MLflow under group prefixes (names.metric_key), so that the chart view sections
them; readers take a store written before the groups (flat keys) as well as a new one; the view that
`harness ui` links to shows a study's trials, best final PSNR first, in either."""
from __future__ import annotations

import json

import optuna
import pytest
from mlflow.entities import Metric

from harness.outputs.names import metric_key
from harness.report.curves import trial_curves
from harness.store.locations import resolve_stores
from harness.store.tracking import StudyTracker
from harness.store.ui_views import VIEW_TAG, study_views

CONFIG = {"lr": 0.002, "kl_anneal_type": "Cyclical", "loss_convention": "lab"}
EPOCHS = {"loss": [0.5, 0.25], "val_psnr": [18.0, 19.5], "beta": [0.0, 1.0]}


@pytest.mark.parametrize("name, key", [
    ("loss", "train/loss"), ("kl", "train/kl"), ("beta", "schedule/beta"), ("tfr", "schedule/tfr"),
    ("val_psnr", "val/psnr"), ("val_psnr_figure", "val/psnr_figure"), ("val_mse", "val/mse"),
    ("seconds", "time/epoch_seconds"), ("trial_seconds", "time/trial_seconds"),
    ("final_val_psnr", "final/psnr"), ("final_val_psnr_ci95", "final/psnr_ci95"),
    ("best_val_psnr", "final/best_epoch_psnr"), ("baseline_repeat_first_frame", "baseline/repeat_first_frame"),
    ("val_psnr_per_frame", "frames/psnr"), ("val_psnr_background_per_frame", "frames/psnr_background"),
    ("baseline_untrained_model_per_frame", "baseline/untrained_model_per_frame"),
    ("seed_3/val_psnr", "seed_3/val/psnr"), ("seed_3/final_val_psnr", "seed_3/final/psnr"),
])
def test_each_metric_goes_to_its_group(name, key):
    assert metric_key(name) == key


@pytest.fixture
def tracker(runs_dir) -> StudyTracker:
    return StudyTracker(resolve_stores(runs_dir), "keys")


def logged_trial(tracker: StudyTracker, number: int, final: float, legacy: bool) -> optuna.trial.FrozenTrial:
    """A completed trial's run with two epochs, a per-frame curve and its final PSNR: logged as the
    harness logs now, or (legacy) under the flat keys a store written before the groups holds."""
    run_id = tracker.start_trial(number, CONFIG, ["lr", "kl_anneal_type"])
    for epoch in range(2):
        values = {name: series[epoch] for name, series in EPOCHS.items()}
        if legacy:
            tracker.client.log_batch(run_id, [Metric(k, v, 0, epoch) for k, v in values.items()])
        else:
            tracker.log_metrics(run_id, values, step=epoch)
    if legacy:
        tracker.client.log_batch(run_id, [Metric("final_val_psnr", final, 0, 0)]
                                 + [Metric("val_psnr_per_frame", 20.0 - f, 0, f) for f in (1, 2, 3)])
    else:
        tracker.log_metrics(run_id, {"final_val_psnr": final})
        tracker.log_series(run_id, "val_psnr_per_frame", [100.0, 19.0, 18.0, 17.0])
    tracker.end_trial(run_id, "COMPLETE")
    return optuna.trial.create_trial(value=final, params={}, distributions={},
                                     user_attrs={"mlflow_run_id": run_id})


@pytest.mark.parametrize("legacy", [False, True], ids=["grouped", "flat-2026-12"])
def test_the_report_reads_a_trial_s_curves_under_either_keys(tracker, legacy):
    frozen = logged_trial(tracker, 0, 21.0, legacy)
    frozen.number = 0
    run = tracker.client.get_run(frozen.user_attrs["mlflow_run_id"])
    assert ("final/psnr" in run.data.metrics) != legacy and ("final_val_psnr" in run.data.metrics) == legacy
    curves = trial_curves(tracker, frozen)
    assert list(curves.history["epoch"]) == [0, 1]
    assert list(curves.history["val_psnr"]) == EPOCHS["val_psnr"] and list(curves.history["loss"]) == EPOCHS["loss"]
    assert curves.per_frame == [19.0, 18.0, 17.0]


def test_a_study_s_counters_go_to_its_parent_run_under_study(tracker):
    tracker.log_study_progress(0, 21.5, {"COMPLETE": 1, "PRUNED": 0})
    metrics = tracker.client.get_run(tracker.parent_run_id).data.metrics
    assert metrics == {"study/trials_complete": 1, "study/trials_pruned": 0, "study/best_psnr": 21.5}


@pytest.mark.parametrize("legacy", [False, True], ids=["grouped", "flat-2026-12"])
def test_the_ui_s_view_shows_the_trials_best_final_psnr_first(tracker, legacy):
    for number, final in enumerate((19.0, 22.5)):
        logged_trial(tracker, number, final, legacy)
    (view,) = study_views(tracker.stores)
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert (view.study, view.role) == ("keys", "trial")
    assert view.path == (f"#/experiments/{tracker.experiment_id}/runs?viewStateShareKey=harness-trials"
                         "&workflowType=machine_learning")
    state = json.loads(experiment.tags[VIEW_TAG + "harness-trials"])
    headline = "final_val_psnr" if legacy else "final/psnr"
    assert state["searchFilter"] == "tags.`harness.role` = 'trial'"
    assert state["orderByKey"] == f"metrics.`{headline}`" and state["orderByAsc"] is False
    assert state["selectedColumns"] == [f"metrics.`{headline}`", "params.`kl_anneal_type`", "params.`lr`",
                                        "tags.`harness.state`"]
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_view_unchanged_is_not_written_again(tracker, monkeypatch):
    from mlflow import MlflowClient

    logged_trial(tracker, 0, 20.0, legacy=False)
    first = study_views(tracker.stores)

    def no_write(*args, **kwargs):
        raise AssertionError("an unchanged view was written again")

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", no_write)
    assert study_views(tracker.stores) == first
