"""`--storage journal:PATH`: Optuna's journal file with the heartbeats, retries and no-repeat rule
of the database storages."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from harness.store.journal import HeartbeatJournalStorage
from sweep_helpers import harness, ok, write_spec


@pytest.mark.slow
def test_two_workers_finish_a_study_on_a_journal_file(tiny_data_root, tmp_path, runs_dir):
    spec = write_spec(tmp_path / "journal.yaml", tiny_data_root, n_trials=2, pruner={"type": "none"})
    journal = tmp_path / "shared" / "optuna.log"
    out = ok(harness("sweep", "--study", str(spec), "--device", "cpu", "--workers", "2",
                     "--storage", f"journal:{journal}", "--runs-dir", str(tmp_path / "runs")))
    assert "[w1]" in out.stderr + out.stdout and "[w2]" in out.stderr + out.stdout
    trials = optuna.load_study(study_name="journal", storage=HeartbeatJournalStorage(journal)).trials
    assert len(trials) >= 2 and all(t.state == TrialState.COMPLETE for t in trials)
    sampled = [tuple(sorted(t.params.items())) for t in trials if "fixed_params" not in t.system_attrs]
    assert len(sampled) == len(set(sampled))      # no point sampled twice across the workers
    report = ok(harness("report", "--study", "journal", "--storage", f"journal:{journal}",
                        "--runs-dir", str(tmp_path / "runs"))).stdout
    assert all(t.user_attrs["mlflow_run_id"] in report for t in trials)   # read back through the journal
