"""A retry keeps its trial's role: the reference trial, whose worker died after writing an epoch's
checkpoint in its own runs folder and before uploading it, is retried on a worker with a runs folder of
its own, trains again from the start (nothing to resume from), and is not pruned against the trials that
completed meanwhile, so the study keeps its reference."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from harness.store.trials import reference_trial
from servers import stop_group
from sweep_helpers import write_spec

# The reference barely trains (lr 1e-7): at its first epoch it lies below every other trial, where the
# median pruner (from one completed trial on, from epoch 0) stops any trial but the reference.
SEARCH = {"search_space": {"lr": {"type": "categorical", "choices": [1e-7, 0.003, 0.004, 0.005]}},
          "sampler": {"type": "random", "seed": 0}, "enqueue": [{"lr": 1e-7}], "n_trials": 4, "retries": 2,
          "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
          "budget": {"epochs": 3, "train_vi_len": 4, "partial": 0.25, "val_epoch_len": 6, "val_vi_len": 24,
                     "val_max_sequences": 1}}


def worker(spec: Path, shared: Path, runs: Path, grace: int) -> subprocess.Popen:
    """A sweep worker with its own runs folder on the shared stores; `grace`: seconds of silence after
    which it takes another worker's trial for lost. --checkpoint-every 0: no upload before a trial ends."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_HEARTBEAT_SECONDS": "1",
           "HARNESS_GRACE_SECONDS": str(grace)}
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "sweep", "--study", str(spec), "--device", "cpu", "--runs-dir", str(runs),
         "--storage", f"sqlite:///{shared / 'optuna.db'}", "--tracking-uri", f"sqlite:///{shared / 'mlflow.db'}",
         "--checkpoint-every", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)


def wait_until(condition, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_a_dead_worker_s_reference_trial_is_retried_elsewhere_and_kept(tiny_data_root, tmp_path):
    spec = write_spec(tmp_path / "kept.yaml", tiny_data_root, **SEARCH)
    shared = tmp_path / "shared"
    shared.mkdir()
    storage = f"sqlite:///{shared / 'optuna.db'}"
    trials = lambda: optuna.load_study(study_name="kept", storage=storage).get_trials()  # noqa: E731
    started = []
    try:
        # The victim writes the reference's first checkpoint in its own folder, and dies before any upload.
        victim = worker(spec, shared, tmp_path / "victim-runs", grace=3600)
        started.append(victim)
        wait_until((tmp_path / "victim-runs" / "trials" / "kept" / "trial-0000" / "checkpoints" / "last.pt").exists,
                   victim)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        # A second worker runs the other three trials; it takes nobody for lost within an hour.
        second = worker(spec, shared, tmp_path / "second-runs", grace=3600)
        started.append(second)
        wait_until(lambda: len(judged(trials())) == 3, second)
        # A third takes the silent reference for lost: its retry runs on the second or the third worker.
        third = worker(spec, shared, tmp_path / "third-runs", grace=2)
        started.append(third)
        outputs = [process.communicate(timeout=600) for process in (second, third)]
    finally:
        for process in started:
            stop_group(process)
    assert [process.returncode for process in (second, third)] == [0, 0], [err[-2000:] for _, err in outputs]

    final = trials()
    lost, retry = final[0], next(t for t in final if t.system_attrs.get("failed_trial") == 0)
    assert lost.state == TrialState.FAIL and lost.user_attrs["enqueued"] == "reference"
    assert retry.state == TrialState.COMPLETE and retry.params == {"lr": 1e-7}
    assert "resumed_from_trial" not in retry.user_attrs or retry.user_attrs["resumed_from_trial"] is None
    assert retry.user_attrs["epochs_run"] == SEARCH["budget"]["epochs"]
    assert reference_trial(final) is not None and reference_trial(final).number == retry.number
    # It lies below every completed trial at its first epoch: judged as any other trial, it was pruned there.
    completed = [t for t in judged(final) if t.state == TrialState.COMPLETE and t.number != retry.number]
    assert completed and retry.intermediate_values[0] < min(t.intermediate_values[0] for t in completed)


def judged(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The finished trials the pruner saw, but the reference's first attempt: no sampled repeats of a point."""
    return [t for t in trials if t.number != 0 and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            and "repeat_of" not in t.user_attrs]
