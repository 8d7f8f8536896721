"""Search, then confirm, through the CLI: `harness sweep` confirms its best trial and the reference on
fresh seeds when its search ends, both stores hold every seed's training, `harness report` leads with
the confirmed ranking; a confirmation stopped by SIGTERM, or whose worker is killed, resumes."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from harness.outputs.names import CONFIRM_SEED_ATTR, confirm_study_name, metric_key
from harness.store.locations import resolve_stores
from sweep_helpers import harness, mlflow_runs, new_runs, ok, write_spec

CONFIRM = {"top": 1, "seeds": 2, "min_seeds": 2}


def confirm_spec(tmp_path, data_root):
    return write_spec(tmp_path / "confirmed.yaml", data_root, n_trials=2, pruner={"type": "none"},
                      enqueue=[{"lr": 0.002}], confirm=CONFIRM)


def confirmation(runs) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=confirm_study_name("confirmed"),
                             storage=resolve_stores(runs).storage_url).get_trials()


@pytest.fixture(scope="module")
def confirmed(tiny_data_root, tmp_path_factory, migrated_mlflow_db):
    """One sweep of a 2-trial search and its confirmation (the best trial and the reference, 2 fresh seeds
    each); the runs folder and the sweep's output."""
    folder = tmp_path_factory.mktemp("confirmed")
    spec, runs = confirm_spec(folder, tiny_data_root), new_runs(folder / "runs", migrated_mlflow_db)
    result = ok(harness("sweep", "--study", str(spec), "--runs-dir", str(runs), "--device", "cpu"))
    return runs, result


def test_a_sweep_confirms_its_best_trial_and_the_reference_on_fresh_seeds(confirmed):
    runs, result = confirmed
    search = optuna.load_study(study_name="confirmed", storage=resolve_stores(runs).storage_url).get_trials()
    search_seeds = {s for t in search for s in t.user_attrs["seeds"]}
    trials = confirmation(runs)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["confirms"] for t in trials} == {0, 1}          # the reference (0) and the other
    seeds = sorted({t.user_attrs[CONFIRM_SEED_ATTR] for t in trials})
    assert len(seeds) == 2 and not set(seeds) & search_seeds            # fresh: no search trial trained them
    assert "confirmation of confirmed: this worker ran 4 training(s)" in result.stderr
    assert "fresh seeds" in result.stderr


def test_both_stores_hold_every_seeds_training(confirmed):
    runs, _ = confirmed
    trials = confirmation(runs)
    client, parents, runs_of_trials = mlflow_runs(runs, "confirmed")
    confirmations = [r for r in client.search_runs([parents[0].info.experiment_id])
                     if r.data.tags.get("harness.role") == "confirmation"]
    assert len(runs_of_trials) == 2 and len(confirmations) == 4       # the search's runs stay as they were
    by_id = {r.info.run_id: r for r in confirmations}
    for trial in trials:
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        assert run.data.metrics[metric_key("final_val_psnr")] == pytest.approx(trial.value)
        assert run.data.tags["harness.seed"] == str(trial.user_attrs[CONFIRM_SEED_ATTR])
        assert run.data.tags["harness.confirms"] == str(trial.user_attrs["confirms"])
        assert run.info.status == "FINISHED" and run.data.params["seed"] == str(trial.user_attrs[CONFIRM_SEED_ATTR])
    parent = parents[0]
    assert "confirmed_ranking.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.data.tags["harness.confirmed_leader"].startswith("trial ")


def test_the_report_leads_with_the_confirmed_ranking(confirmed, tmp_path):
    runs, _ = confirmed
    out = ok(harness("report", "--study", "confirmed", "--runs-dir", str(runs), "--csv", str(tmp_path / "t.csv")))
    first = out.stdout.splitlines()[0]
    assert first.startswith("confirmed ranking (done): 2 candidate(s) on fresh seeds")
    assert (tmp_path / "t.confirmed.csv").is_file() and "optimism" in (tmp_path / "t.confirmed.csv").read_text()


def test_a_search_without_confirmation_says_its_ranking_is_unconfirmed(tiny_data_root, tmp_path, runs_dir):
    spec = write_spec(tmp_path / "plain.yaml", tiny_data_root, n_trials=1, pruner={"type": "none"})
    runs = tmp_path / "runs"
    ok(harness("sweep", "--study", str(spec), "--runs-dir", str(runs), "--device", "cpu"))
    out = ok(harness("report", "--study", "plain", "--runs-dir", str(runs))).stdout
    assert out.startswith("ranking unconfirmed: no confirmation ran")


def start_confirm(spec, runs, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "confirm", "--study", str(spec), "--runs-dir",
                             str(runs), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)


def wait_for_a_confirmation_epoch(runs, process: subprocess.Popen) -> None:
    """Until a confirmation training has finished an epoch (its checkpoint exists)."""
    deadline = time.monotonic() + 300
    folder = runs / "trials" / confirm_study_name("confirmed")
    while not list(folder.glob("trial-*/checkpoints/last.pt")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_stopped_confirmation_resumes_where_it_stopped(confirmed, tiny_data_root, tmp_path, how):
    """A confirmation interrupted mid-training (SIGTERM: queued again at once; SIGKILL: its worker lost, so
    retried after the grace period) ends with every training it planned, the interrupted one resumed
    from its checkpoint."""
    runs = tmp_path / "runs"
    shutil.copytree(confirmed[0], runs, ignore=shutil.ignore_patterns(f"{confirm_study_name('confirmed')}*"))
    _drop_confirmation(runs)
    spec = confirm_spec(tmp_path, tiny_data_root)
    env = {**os.environ, "HARNESS_HEARTBEAT_SECONDS": "1", "HARNESS_GRACE_SECONDS": "2"}
    first = start_confirm(spec, runs, env)
    wait_for_a_confirmation_epoch(runs, first)
    first.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    code = first.wait(timeout=120)
    assert code == (143 if how == "sigterm" else -9)
    if how == "sigkill":
        time.sleep(2.5)      # past the grace period: the next worker fails the lost training and retries it
    again = ok(subprocess.run([sys.executable, "-m", "harness.cli", "confirm", "--study", str(spec), "--runs-dir",
                               str(runs), "--device", "cpu"], capture_output=True, text=True, env=env, timeout=600))
    trials = confirmation(runs)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    assert sorted((t.user_attrs["candidate"], t.user_attrs[CONFIRM_SEED_ATTR]) for t in done) == sorted(
        {(t.user_attrs["candidate"], t.user_attrs[CONFIRM_SEED_ATTR]) for t in done})
    assert any(t.user_attrs.get("resumed_from_trial") is not None for t in done), again.stderr[-3000:]


def _drop_confirmation(runs) -> None:
    """The copied stores without the confirmation (studies and MLflow runs of the search only)."""
    storage = resolve_stores(runs).storage_url
    optuna.delete_study(study_name=confirm_study_name("confirmed"), storage=storage)
