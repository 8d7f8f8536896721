"""`harness sweep --workers N`: N worker processes share a study's trials and the machine's cores, with
one merged output; a signal to the command stops them all, ends it with that signal's status, and leaves no
trial running and the study's parent run marked stopped."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable

import pytest
from optuna.trial import TrialState

from harness.store.tracking import STOPPED_TAG
from sweep_helpers import mlflow_runs, study, write_spec

pytestmark = pytest.mark.slow   # real harness processes

BUDGET = {"epochs": 4, "train_vi_len": 4, "partial": 0.25, "val_epoch_len": 6, "val_vi_len": 24,
          "val_max_sequences": 1}


def start(spec, runs, workers: int = 2) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", "--study", str(spec), "--runs-dir",
                             str(runs), "--device", "cpu", "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def sigterm_once(process: subprocess.Popen, ready: Callable[[], bool]) -> str:
    """Send SIGTERM once `ready()` holds (the process still running); its stderr. Kills it if it hangs."""
    try:
        deadline = time.monotonic() + 300
        while not ready():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "not ready in 5 minutes"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        return process.communicate(timeout=120)[1]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def running_with_a_checkpoint(runs, name: str) -> set[int]:
    """Trials now running that have written a checkpoint of an epoch: a worker is inside each of them.
    (Counting checkpoint files alone would also count a trial that has finished.)"""
    folder = runs / "trials" / name
    if not any(folder.glob("trial-*/checkpoints/last.pt")):      # the store may not exist yet
        return set()
    trials = study(runs, name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return {t.number for t in trials if (folder / f"trial-{t.number:04d}" / "checkpoints" / "last.pt").exists()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_share_a_study_stop_together_on_sigterm_and_finish_it_when_run_again(tiny_data_root, tmp_path, runs_dir):
    spec = write_spec(tmp_path / "pair.yaml", tiny_data_root, n_trials=2, pruner={"type": "none"}, budget=BUDGET)
    runs = tmp_path / "runs"
    process = start(spec, runs)
    # Both workers inside a trial: each has written a checkpoint of its first epoch.
    inside: set[int] = set()

    def both_inside() -> bool:
        inside.clear()
        inside.update(running_with_a_checkpoint(runs, "pair"))
        return len(inside) == 2

    err = sigterm_once(process, both_inside)
    assert process.returncode == 143, err[-3000:]       # SIGTERM's status, as one worker's
    assert "starting 2 workers, 1 thread(s) each" in err and "[w1] " in err and "[w2] " in err
    assert "Traceback" not in err
    trials = study(runs, "pair").get_trials()
    workers = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in trials if "worker" in t.user_attrs}
    assert len(workers) == 2 and not any(alive(pid) for pid in workers)
    assert TrialState.RUNNING not in [t.state for t in trials]
    interrupted = [t for t in trials if t.state == TrialState.FAIL
                   and t.user_attrs["fail_reason"] == "interrupted by SIGTERM"]
    retries = [t for t in trials if t.state == TrialState.WAITING and "failed_trial" in t.system_attrs]
    assert {t.number for t in interrupted} == inside
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == sorted(t.number for t in interrupted)
    (parent,) = mlflow_runs(runs, "pair")[1]
    assert parent.info.status == "KILLED"
    assert parent.data.tags[STOPPED_TAG].startswith("stopped (interrupted by SIGTERM): ")

    again = start(spec, runs)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    trials = study(runs, "pair").get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    (parent,) = mlflow_runs(runs, "pair")[1]
    assert parent.info.status == "FINISHED" and STOPPED_TAG not in parent.data.tags
    assert {t.user_attrs.get("resumed_from_trial") for t in trials} >= {t.number for t in interrupted}


def test_workers_whose_command_is_killed_queue_their_trials_again(tiny_data_root, tmp_path, runs_dir):
    """SIGKILL to the command (a closed terminal, a session that ends): the kernel stops each worker with
    SIGHUP, once for each of the command's threads, and their trials are queued again instead of failing on
    a broken output pipe or being cut short by a repeated signal."""
    spec = write_spec(tmp_path / "orphans.yaml", tiny_data_root, n_trials=4, pruner={"type": "none"},
                      budget=BUDGET)
    runs = tmp_path / "runs"
    process = start(spec, runs)
    try:
        deadline = time.monotonic() + 300
        while len(inside := running_with_a_checkpoint(runs, "orphans")) < 2:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        process.kill()
        process.communicate(timeout=60)
        trials = study(runs, "orphans").get_trials()
        workers = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in trials if "worker" in t.user_attrs}
        deadline = time.monotonic() + 120
        while any(alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its command by 2 minutes"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
    trials = study(runs, "orphans").get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert {t.number for t in failed} == inside, [(t.number, t.state, t.user_attrs, t.system_attrs) for t in trials]
    assert all(t.user_attrs["fail_reason"] == "interrupted by SIGHUP" for t in failed)
    retries = [t for t in trials if t.state == TrialState.WAITING and "failed_trial" in t.system_attrs]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == sorted(t.number for t in failed)


def test_sigterm_to_one_worker_is_a_clean_stop(tiny_data_root, tmp_path, runs_dir):
    spec = write_spec(tmp_path / "term.yaml", tiny_data_root, n_trials=1, pruner={"type": "none"}, budget=BUDGET)
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "harness.cli", "sweep", "--study", str(spec), "--runs-dir", str(runs),
               "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    checkpoint = runs / "trials" / "term" / "trial-0000" / "checkpoints" / "last.pt"
    err = sigterm_once(process, checkpoint.exists)
    assert process.returncode == 143, err[-3000:]
    assert "interrupted by SIGTERM: the running trial is recorded as failed and queued again" in err
    assert "Traceback" not in err
    trials = study(runs, "term").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["fail_reason"] == "interrupted by SIGTERM"
    assert checkpoint.exists()     # the last complete epoch, which a retry resumes from (test_scaleout)
