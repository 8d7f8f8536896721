"""Scale-out in real processes on 127.0.0.1: PostgreSQL as the shared Optuna storage, an MLflow
tracking server backed by the same PostgreSQL, and several `harness sweep` workers. Workers are
killed (SIGKILL) and interrupted (SIGINT) mid-trial; nothing may be lost or run twice."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator

import optuna
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from harness.outputs.names import metric_key, study_metric
from harness.store.locations import resolve_stores
from harness.store.tracking import StudyTracker
from models.config import TrainConfig
from models.data import load_dance_data
from models.trainer import Trainer
from servers import free_port, mlflow_server, postgres_server, stop_group
from sweep_helpers import harness, ok, write_spec

pytestmark = pytest.mark.slow   # real harness processes

# Short heartbeats so a dead worker's trial is noticed within seconds, not the default 30 s.
HEARTBEAT = {"HARNESS_HEARTBEAT_SECONDS": "1", "HARNESS_GRACE_SECONDS": "4"}
# A spec with epochs enough to kill a worker between two of them.
LONG_BUDGET = {"epochs": 5, "train_vi_len": 4, "partial": 0.25, "val_epoch_len": 6, "val_vi_len": 24,
               "val_max_sequences": 1}


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[dict[str, str]]:
    """PostgreSQL (databases optuna and mlflow) and an MLflow server on it, shared by this module's tests."""
    artifacts = tmp_path_factory.mktemp("server") / "artifacts"
    artifacts.mkdir()
    with postgres_server() as databases, mlflow_server(databases["mlflow"], artifacts) as tracking_uri:
        yield {"storage": databases["optuna"], "tracking_uri": tracking_uri, "artifacts": str(artifacts)}


def worker_env(servers: dict[str, str], runs: Path) -> dict[str, str]:
    # One thread per worker: two workers share the 2 cores of CI.
    return {**os.environ, **HEARTBEAT, "OMP_NUM_THREADS": "1", "HARNESS_STORAGE": servers["storage"],
            "MLFLOW_TRACKING_URI": servers["tracking_uri"], "HARNESS_RUNS_DIR": str(runs)}


@contextlib.contextmanager
def workers(spec: Path, env: dict[str, str], count: int = 1) -> Iterator[list[subprocess.Popen]]:
    """`count` sweep workers on the spec; all are stopped when the block ends, also on failure."""
    started = []
    try:
        for _ in range(count):
            started.append(start_worker(spec, env))
        yield started
    finally:
        for process in started:
            stop_group(process)


def start_worker(spec: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", "--study", str(spec), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return err


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def wait_until(condition, process: subprocess.Popen, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
    return value


def wait_for_attr(servers: dict[str, str], name: str, number: int, key: str, process: subprocess.Popen):
    def value():
        trials = load(servers, name)
        return trials[number].user_attrs.get(key) if len(trials) > number else None
    return wait_until(value, process)


def load(servers: dict[str, str], name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=servers["storage"]).get_trials()


def trial_runs(servers: dict[str, str], name: str) -> tuple[MlflowClient, dict[int, object]]:
    """The study's nested MLflow runs by trial number; fails if a trial has more than one."""
    client = MlflowClient(tracking_uri=servers["tracking_uri"])
    experiment = client.get_experiment_by_name(name)
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("harness.role") == "trial"]
    numbers = [int(r.data.tags["harness.trial"]) for r in runs]
    assert len(numbers) == len(set(numbers)), f"a trial has several MLflow runs: {sorted(numbers)}"
    return client, {int(r.data.tags["harness.trial"]): r for r in runs}


def val_psnr(client: MlflowClient, run_id: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, metric_key("val_psnr"))}


def test_two_workers_share_a_study_on_postgresql_and_an_mlflow_server(servers, tiny_data_root, tmp_path):
    spec = write_spec(tmp_path / "pg_pair.yaml", tiny_data_root, n_trials=4, pruner={"type": "none"})
    with workers(spec, worker_env(servers, tmp_path / "runs"), count=2) as pair:
        errs = [finish(process) for process in pair]
    for err in errs:
        assert int(err.rsplit("this worker ran ", 1)[1].split()[0]) >= 1, err[-2000:]   # both took trials

    trials = load(servers, "pg_pair")
    # Workers that check the count at the same moment may each start one more: at most one extra here.
    assert 4 <= len(trials) <= 5 and all(t.state == TrialState.COMPLETE for t in trials)
    client, runs = trial_runs(servers, "pg_pair")
    assert sorted(runs) == [t.number for t in trials]        # exactly one MLflow run per trial
    for t in trials:
        run = runs[t.number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"] and run.info.status == "FINISHED"
        assert float(run.data.params["lr"]) == pytest.approx(t.params["lr"])
        assert run.data.metrics[metric_key("final_val_psnr")] == pytest.approx(t.value)
        # Artifacts went through the server to its own store, not to a local folder of the worker.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert (Path(servers["artifacts"]) / run.info.experiment_id / run.info.run_id / "artifacts"
                / "checkpoint" / "last.pt").is_file()
    assert not (tmp_path / "runs" / "mlartifacts").exists()


def test_a_killed_worker_s_trial_resumes_on_a_worker_that_shares_no_folder_with_it(servers, tiny_data_root,
                                                                                     tmp_path):
    spec = write_spec(tmp_path / "pg_kill.yaml", tiny_data_root, n_trials=3, budget=LONG_BUDGET,
                      pruner={"type": "none"}, retries=2)
    # Each worker has its own runs folder: the retry can only resume from the MLflow run's checkpoint,
    # uploaded through the server after each epoch.
    victim_runs, runs = tmp_path / "victim-runs", tmp_path / "runs"
    victim_checkpoint = victim_runs / "trials" / "pg_kill" / "trial-0000" / "checkpoints" / "last.pt"
    with workers(spec, worker_env(servers, victim_runs)) as (victim,):
        wait_for(victim_checkpoint, victim)             # trial 0 has finished at least one epoch
        client = MlflowClient(tracking_uri=servers["tracking_uri"])
        run_id = wait_for_attr(servers, "pg_kill", 0, "mlflow_run_id", victim)
        wait_until(lambda: client.list_artifacts(run_id, "checkpoint"), victim)   # ... and uploaded it
        os.killpg(victim.pid, signal.SIGKILL)
        killed_at = datetime.now()
        victim.wait(timeout=30)
        with workers(spec, worker_env(servers, runs)) as (survivor,):
            err = finish(survivor)
    saved_epochs = torch.load(victim_checkpoint, weights_only=True)["epoch"]
    assert 1 <= saved_epochs < LONG_BUDGET["epochs"]
    assert not (runs / "trials" / "pg_kill" / "trial-0000").exists()

    trials = load(servers, "pg_kill")
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3, err[-3000:]
    lost = trials[0]
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.params == lost.params
    assert retry.user_attrs["resumed_from_trial"] == 0
    assert retry.user_attrs["epochs_run"] == LONG_BUDGET["epochs"]
    # The uploaded checkpoint is the last epoch's, or the one before when the kill came between
    # the epoch's checkpoint file and its upload.
    resumed = retry.user_attrs["resumed_epochs"]
    assert saved_epochs - 1 <= resumed <= saved_epochs and resumed >= 1
    assert f"resuming trial 0 after epoch {resumed} from its MLflow run {run_id}" in err
    requeued_after = (lost.datetime_complete - killed_at).total_seconds()
    assert 0 < requeued_after < 120

    client, runs_by_trial = trial_runs(servers, "pg_kill")
    assert sorted(runs_by_trial) == [t.number for t in trials]
    dead = runs_by_trial[0]
    assert dead.info.status == "FAILED" and dead.data.tags["harness.state"] == "FAIL"
    assert "worker lost" in dead.data.tags["harness.message"]
    for t in trials[1:]:
        run = runs_by_trial[t.number]
        assert run.info.status == "FINISHED" and run.data.metrics[metric_key("final_val_psnr")] == pytest.approx(t.value)
    # The retry's run holds the whole curve: the restored epochs, equal to what the dead run had logged
    # (it may have died after saving an epoch's checkpoint and before logging that epoch).
    lost_curve, retry_curve = (val_psnr(client, runs_by_trial[n].info.run_id) for n in (0, retry.number))
    assert sorted(retry_curve) == list(range(LONG_BUDGET["epochs"]))
    assert set(range(saved_epochs - 1)) <= set(lost_curve)
    for epoch in set(lost_curve) & set(range(saved_epochs)):
        assert retry_curve[epoch] == pytest.approx(lost_curve[epoch])
    assert sorted(retry.intermediate_values) == list(range(LONG_BUDGET["epochs"]))

    # Resuming changed nothing: the same configuration trained without interruption ends equal.
    config_file = runs / "trials" / "pg_kill" / f"trial-{retry.number:04d}" / "config.yaml"
    config = TrainConfig.from_dict(yaml.safe_load(config_file.read_text()))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_dance_data(tiny_data_root, height=config.height, width=config.width,
                               train_vi_len=config.train_vi_len, val_vi_len=config.val_vi_len)
        uninterrupted = Trainer(config, data).fit()
    finally:
        torch.set_num_threads(threads)
    assert uninterrupted.final_val_psnr == pytest.approx(retry.value, abs=1e-4)


def test_ctrl_c_closes_the_trial_and_a_rerun_resumes_it(servers, tiny_data_root, tmp_path):
    spec = write_spec(tmp_path / "pg_intr.yaml", tiny_data_root, n_trials=2, budget=LONG_BUDGET,
                      pruner={"type": "none"})
    runs = tmp_path / "runs"
    env = worker_env(servers, runs)
    with workers(spec, env) as (worker,):
        wait_for(runs / "trials" / "pg_intr" / "trial-0000" / "checkpoints" / "last.pt", worker)
        worker.send_signal(signal.SIGINT)
        _, err = worker.communicate(timeout=120)
    assert worker.returncode == 130 and "interrupted" in err and "Traceback" not in err

    trials = load(servers, "pg_intr")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["fail_reason"] == "interrupted by SIGINT"     # at a safe point
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params
    client, runs_by_trial = trial_runs(servers, "pg_intr")
    assert [(r.info.status, r.data.tags["harness.state"]) for r in runs_by_trial.values()] == [("FAILED", "FAIL")]

    again = ok(harness("sweep", "--study", str(spec), "--device", "cpu", env=worker_env(servers, runs)))
    # The shared runs folder holds the newest checkpoint: the retry takes it from there.
    local = runs / "trials" / "pg_intr" / "trial-0000" / "checkpoints" / "last.pt"
    assert "this worker ran 2" in again.stderr and "resuming trial 0 after epoch" in again.stderr
    assert f"from {local}" in again.stderr
    trials = load(servers, "pg_intr")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].user_attrs["resumed_from_trial"] == 0 and trials[1].user_attrs["fail_reason"] is None
    report = ok(harness("report", "--study", "pg_intr", "--html", "--out", str(tmp_path / "report"),
                        env=worker_env(servers, runs))).stdout
    assert "retried as trial 1" in report and "retry of trial 0, resumed after epoch" in report
    # The HTML report reads curves and the rollout GIF through the server, and logs itself there.
    assert (tmp_path / "report" / "best_rollout.gif").is_file()
    curves = pd.read_csv(tmp_path / "report" / "curves.csv")
    assert list(curves[curves.trial == 1].epoch) == list(range(LONG_BUDGET["epochs"]))   # restored + run
    parent = next(r for r in client.search_runs([runs_by_trial[0].info.experiment_id])
                  if r.data.tags.get("harness.role") == "study")
    assert "report/index.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}


def test_workers_writing_the_parent_run_at_once_do_not_collide(servers, tmp_path):
    # MLflow's SQL store checks for a tag row, then inserts it: without retries, about half of such
    # bursts failed here with a unique-key error (psycopg UniqueViolation) in some writer.
    stores = resolve_stores(tmp_path / "runs", servers["storage"], servers["tracking_uri"])
    for attempt in range(3):
        tracker = StudyTracker(stores, f"burst-{attempt}")
        barrier, errors = threading.Barrier(8), []

        def start_and_report(worker: int) -> None:
            barrier.wait()
            try:
                tracker.study_started("name: burst\n", "a burst of workers")
                tracker.log_study_progress(0, 20.0 + worker, {"COMPLETE": worker})
            except Exception as err:   # noqa: BLE001 - collected, then asserted empty
                errors.append(repr(err))

        threads = [threading.Thread(target=start_and_report, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        parent = tracker.client.get_run(tracker.parent_run_id)
        assert parent.data.tags["mlflow.note.content"] == "a burst of workers"
        assert len(tracker.client.get_metric_history(tracker.parent_run_id, study_metric("best_psnr"))) == 8


@pytest.mark.parametrize("option, value, message", [
    ("--storage", "postgresql://harness@127.0.0.1:{port}/optuna", "cannot connect"),
    ("--tracking-uri", "http://127.0.0.1:{port}", "no MLflow server answers"),
])
def test_unreachable_servers_are_one_line_errors(option, value, message, tmp_path):
    result = harness("sweep", "--study", "smoke", "--runs-dir", str(tmp_path / "runs"),
                     option, value.format(port=free_port()), timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr

