"""A study written by the release before this layout (commit a4dbdaa, tests/data/store-a4dbdaa: trial 0
complete; trial 1 stopped by SIGTERM before a checkpoint; its retry, trial 2, stopped after epoch 1 with
a checkpoint; trial 3 queued to retry it) opens in every read command and continues: the queued retry
resumes from the old checkpoint and the study completes, its best exported and rolled out."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.store.locations import resolve_stores
from sweep_helpers import harness, ok

STORE = Path(__file__).resolve().parents[1] / "data" / "store-a4dbdaa"
WRITTEN_AT = "file:///tmp/release-store/runs"      # where the release wrote it: its MLflow paths are absolute


@pytest.fixture
def released(tmp_path) -> tuple[Path, Path]:
    """The stored runs folder, moved to a test folder (MLflow's absolute artifact paths moved with it),
    and its spec."""
    runs = tmp_path / "runs"
    shutil.copytree(STORE / "runs-folder", runs)
    with sqlite3.connect(runs / "mlflow.db") as db:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (WRITTEN_AT, runs.as_uri()))
    shutil.copy(STORE / "released.yaml", tmp_path)
    return runs, tmp_path / "released.yaml"


def test_a_store_of_the_release_opens_and_its_study_continues(released, tmp_path):
    runs, spec = released
    listed = ok(harness("studies", "--runs-dir", str(runs))).stdout
    assert "released" in listed
    report = ok(harness("report", "--study", "released", "--runs-dir", str(runs))).stdout
    assert report.startswith("ranking unconfirmed") and "retry of trial 1" in report
    assert '"trial": 0' in ok(harness("best", "--study", "released", "--runs-dir", str(runs))).stdout

    resumed = ok(harness("sweep", "--study", str(spec), "--runs-dir", str(runs), "--device", "cpu"))
    assert "resuming trial 2 after epoch 1" in resumed.stderr
    trials = optuna.load_study(study_name="released", storage=resolve_stores(runs).storage_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL,
                                         TrialState.COMPLETE]
    assert trials[3].user_attrs["resumed_from_trial"] == 2 and trials[3].user_attrs["epochs_run"] == 2

    ok(harness("report", "--study", "released", "--html", "--runs-dir", str(runs)))
    assert (runs / "reports" / "released" / "index.html").is_file()
    exported = tmp_path / "best"
    ok(harness("best", "--study", "released", "--export", "ckpt", "--out", str(exported), "--runs-dir", str(runs)))
    ok(harness("generate", "--ckpt", str(exported / "checkpoint.pt"), "--out", str(tmp_path / "generated"),
               "--length", "8", "--device", "cpu"))
    assert (tmp_path / "generated" / "submission.csv").is_file()
