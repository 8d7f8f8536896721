"""docker/slurm/sweep-array.sbatch on a real one-node SLURM cluster (tests/slurm_cluster.py): a job array
of two `harness sweep` workers shares a study on PostgreSQL; both tasks are stopped mid-trial, one the
way preemption and `scancel --full --signal=TERM` do it (SIGTERM to every process of the job), one the
way the time-limit warning does (USR1 to the batch shell, which passes it on as SIGTERM). Their trials
are queued again, the tasks requeue themselves, and when they run again the study completes, every
interrupted trial resumed from its checkpoint. Nothing here depends on how fast the machine is: every
wait polls, with minutes to spare."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import optuna
import pytest
from optuna.trial import TrialState

from harness.store.locations import MLFLOW_DB, resolve_stores
from servers import postgres_server
from slurm_cluster import Cluster, slurm_cluster
from sweep_helpers import mlflow_runs, write_spec

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "slurm" / "sweep-array.sbatch"
# Epochs enough that a trial seen mid-way (its first epoch's checkpoint written) is still training
# when the signal arrives.
BUDGET = {"epochs": 4, "train_vi_len": 4, "partial": 0.25, "val_epoch_len": 6, "val_vi_len": 24,
          "val_max_sequences": 1}
TRIALS = 3
WAIT = 300      # seconds any one step may take on a busy machine before the test gives up
STOP_MESSAGE = "interrupted by SIGTERM: the running trial is recorded as failed and queued again"


@pytest.fixture
def cluster() -> Cluster:
    # Two CPUs, whatever the machine has: the two one-CPU tasks run side by side.
    with slurm_cluster(cpus=2) as started:
        yield started


def test_the_script_names_what_is_missing():
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ["PATH"], "HARNESS_STORAGE": "postgresql://h/optuna"})
    assert result.returncode == 2
    assert "set MLFLOW_TRACKING_URI before sbatch" in result.stderr


@pytest.mark.slow   # a SLURM cluster, PostgreSQL and real workers
def test_a_job_array_finishes_a_study_and_tasks_stopped_mid_trial_lose_nothing(cluster, tiny_data_root,
                                                                               migrated_mlflow_db, tmp_path):
    spec = write_spec(tmp_path / "slurm_array.yaml", tiny_data_root, n_trials=TRIALS, budget=BUDGET,
                      pruner={"type": "none"}, retries=2)
    runs = tmp_path / "runs"        # the shared runs folder: one node, one disk
    runs.mkdir()
    shutil.copy(migrated_mlflow_db, runs / MLFLOW_DB)
    with postgres_server(("optuna",)) as databases:
        storage = databases["optuna"]
        env = {"HARNESS_STORAGE": storage, "MLFLOW_TRACKING_URI": resolve_stores(runs).tracking_uri,
               "HARNESS_RUNS_DIR": str(runs), "STUDY": str(spec), "HARNESS_VENV": sys.prefix, "DEVICE": "cpu",
               # a worker waiting for the others looks again every second
               "HARNESS_HEARTBEAT_SECONDS": "1", "HARNESS_GRACE_SECONDS": "60"}
        array = cluster.sbatch("--array=0-1", "--cpus-per-task=1", f"--output={tmp_path}/task-%a.out",
                               f"--chdir={tmp_path}", str(SCRIPT), env=env)
        tasks = [f"{array}_0", f"{array}_1"]
        outputs = [tmp_path / "task-0.out", tmp_path / "task-1.out"]

        def show() -> str:
            return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in outputs if p.exists())

        def wait_until(condition: Callable[[], object], what: str):
            deadline = time.monotonic() + WAIT
            while not (value := condition()):
                states = {name: cluster.task(name) for name in tasks}
                assert not any(s.get("JobState") in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")
                               and s.get("ExitCode") != "0:0" for s in states.values()), (
                    f"a task failed while waiting for {what}: {states}\n{show()}\n{cluster.logs()}")
                assert time.monotonic() < deadline, f"no {what} in {WAIT} s\n{show()}\n{cluster.logs()}"
                time.sleep(0.2)
            return value

        def trials() -> list[optuna.trial.FrozenTrial]:
            try:
                return optuna.load_study(study_name="slurm_array", storage=storage).get_trials()
            except KeyError:     # no worker has created the study yet
                return []

        # Both workers inside a trial: each trial running has its first epoch's checkpoint.
        def mid_trial() -> list[int]:
            running = [t for t in trials() if t.state == TrialState.RUNNING
                       and (Path(t.user_attrs.get("trial_dir", "/nonexistent")) / "checkpoints" / "last.pt").exists()]
            return [t.number for t in running] if len(running) == 2 else []

        interrupted = wait_until(mid_trial, "two trials mid-way")
        # Task 0 as preemption stops it: SIGTERM to every process of the job, the worker included.
        cluster.run("scancel", "--full", "--signal=TERM", tasks[0])
        # Task 1 as the time-limit warning (--signal=B:USR1@...) does: USR1 to the batch shell alone.
        cluster.run("scancel", "--batch", "--signal=USR1", tasks[1])

        # Each worker queues its trial again and exits 143; the script then requeues its task, and Slurm
        # starts it again once its hold on a requeued job is over (cred_expire + 1 s: 11 s here).
        wait_until(lambda: all(cluster.task(t).get("Restarts") == "1" for t in tasks), "requeued tasks")
        out = [path.read_text() for path in outputs]
        assert "SIGTERM reached the worker from Slurm" in out[0]
        assert "USR1 (time-limit warning): stopping the worker" in out[1]
        for text in out:
            assert STOP_MESSAGE in text and "requeueing the task" in text, show()
            assert "Traceback" not in text, show()

        # The restarted tasks finish the study.
        wait_until(lambda: all(cluster.task(t).get("JobState") == "COMPLETED" for t in tasks), "finished tasks")
        assert [(cluster.task(t)["ExitCode"], cluster.task(t)["Restarts"]) for t in tasks] == [("0:0", "1")] * 2
        for path in outputs:
            assert "(restart 1)" in path.read_text() and "worker exited 0" in path.read_text(), show()
        final = trials()

    # Workers that count at the same moment may each start one more: at most one extra with two.
    complete = [t for t in final if t.state == TrialState.COMPLETE]
    assert TRIALS <= len(complete) <= TRIALS + 1
    assert sorted(t.number for t in final if t.state != TrialState.COMPLETE) == sorted(interrupted)
    for number in interrupted:
        assert final[number].state == TrialState.FAIL
        assert final[number].user_attrs["fail_reason"] == "interrupted by SIGTERM"
        retry = next(t for t in complete if t.system_attrs.get("failed_trial") == number)
        assert retry.params == final[number].params
        assert retry.user_attrs["resumed_from_trial"] == number
        assert 1 <= retry.user_attrs["resumed_epochs"] < BUDGET["epochs"]
        assert retry.user_attrs["epochs_run"] == BUDGET["epochs"]
    # One MLflow run per trial: the interrupted ones failed, the others finished.
    _, _, trial_runs = mlflow_runs(runs, "slurm_array")
    status = {int(r.data.tags["harness.trial"]): r.info.status for r in trial_runs}
    assert status == {t.number: "FAILED" if t.number in interrupted else "FINISHED" for t in final}
