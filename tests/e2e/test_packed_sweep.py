"""`harness sweep --pack N` with one seed per trial: a worker holds N trials and trains them as one
batched model, each recorded exactly as an unpacked trial is, with values within rounding of the
unpacked sweep's; a new trial takes a slot as soon as one is free."""
import signal
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState

from harness.outputs.names import metric_key
from sweep_helpers import artifact_names, harness, mlflow_runs, new_runs, ok, study, write_spec

pytestmark = pytest.mark.slow   # real harness processes


def test_packed_trials_record_what_separate_trials_do(tiny_data_root, tmp_path, migrated_mlflow_db):
    spec = write_spec(tmp_path / "packed.yaml", tiny_data_root, n_trials=3, pruner={"type": "none"},
                      enqueue=[{"lr": 0.002}, {"lr": 0.004}])
    separate_runs, packed_runs = (new_runs(tmp_path / name, migrated_mlflow_db) for name in ("separate", "packed"))
    ok(harness("sweep", "--study", str(spec), "--runs-dir", str(separate_runs), "--device", "cpu"))
    result = ok(harness("sweep", "--study", str(spec), "--runs-dir", str(packed_runs), "--device", "cpu",
                        "--pack", "2"))
    separate, packed = study(separate_runs, "packed").get_trials(), study(packed_runs, "packed").get_trials()
    assert [t.params for t in packed] == [t.params for t in separate]
    for a, b in zip(separate, packed):
        assert b.state == TrialState.COMPLETE
        assert b.value == pytest.approx(a.value, abs=0.05)
        assert [b.intermediate_values[e] for e in range(2)] == pytest.approx(
            [a.intermediate_values[e] for e in range(2)], abs=0.05)
        assert f"trial {b.number} COMPLETE" in result.stderr
    # Trials 0 and 1 trained together; trial 2 took the slot they left.
    first, second, third = packed
    assert second.datetime_start < first.datetime_complete and first.datetime_start < second.datetime_complete
    assert third.datetime_start >= min(first.datetime_complete, second.datetime_complete)
    client, _, trial_runs = mlflow_runs(packed_runs, "packed")
    assert sorted(r.data.tags["harness.trial"] for r in trial_runs) == ["0", "1", "2"]
    for run in trial_runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, metric_key("val_psnr"))) == 2
        assert {"checkpoint/last.pt", "rollout.gif"} <= artifact_names(client, run.info.run_id)


def test_sigterm_queues_every_held_trial_and_a_rerun_resumes_each(tiny_data_root, tmp_path, runs_dir):
    budget = {"epochs": 4, "train_vi_len": 4, "partial": 0.25, "val_epoch_len": 6, "val_vi_len": 24,
              "val_max_sequences": 1}
    spec = write_spec(tmp_path / "packed_stop.yaml", tiny_data_root, n_trials=2, budget=budget,
                      pruner={"type": "none"}, enqueue=[{"lr": 0.002}, {"lr": 0.004}])
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "harness.cli", "sweep", "--study", str(spec), "--runs-dir", str(runs),
               "--device", "cpu", "--pack", "2"]
    worker = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    checkpoints = [runs / "trials" / "packed_stop" / f"trial-{n:04d}" / "checkpoints" / "last.pt" for n in (0, 1)]
    deadline = time.monotonic() + 600
    while not all(path.exists() for path in checkpoints):     # both trials past their first epoch
        assert worker.poll() is None and time.monotonic() < deadline, worker.stderr.read()[-3000:]
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 143 and "Traceback" not in err, err[-3000:]
    trials = study(runs, "packed_stop").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 + [TrialState.WAITING] * 2
    assert all(t.user_attrs["fail_reason"] == "interrupted by SIGTERM" for t in trials[:2])
    assert sorted(t.system_attrs["failed_trial"] for t in trials[2:]) == [0, 1]

    again = ok(harness("sweep", "--study", str(spec), "--runs-dir", str(runs), "--device", "cpu", "--pack", "2"))
    trials = study(runs, "packed_stop").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 + [TrialState.COMPLETE] * 2, again.stderr[-3000:]
    for retry in trials[2:]:
        lost = trials[retry.system_attrs["failed_trial"]]
        assert retry.params == lost.params
        assert retry.user_attrs["resumed_from_trial"] == lost.number
        assert 1 <= retry.user_attrs["resumed_epochs"] < budget["epochs"]
        assert sorted(retry.intermediate_values) == list(range(budget["epochs"]))
