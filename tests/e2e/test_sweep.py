"""`harness sweep` end to end, in real processes: Optuna study, MLflow runs, best export, reports, UI."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from PIL import Image
from optuna.trial import TrialState

from harness.outputs.names import metric_key
from harness.store.locations import resolve_stores
from models.checkpoint import load_model
from browser import load_page
from servers import free_port
from sweep_helpers import TRIAL_ARTIFACTS, artifact_names, harness, mlflow_runs, new_runs, ok, study, write_spec

pytestmark = pytest.mark.slow   # real harness processes

# -- the shipped smoke study, run once for the module ---------------------------------------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory, migrated_mlflow_db) -> tuple[Path, subprocess.CompletedProcess]:
    runs = new_runs(tmp_path_factory.mktemp("smoke-runs"), migrated_mlflow_db)
    return runs, ok(harness("sweep", "--study", "smoke", "--runs-dir", str(runs), "--device", "cpu"))


def test_smoke_study_has_its_trials_in_optuna(smoke):
    runs, result = smoke
    trials = study(runs, "smoke").get_trials()
    assert len(trials) == 3
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert any(t.state == TrialState.COMPLETE for t in trials)
    reference = trials[0]
    assert reference.params == {"kl_anneal_type": "Cyclical", "lr": 0.002}   # the spec's enqueued trial
    assert reference.user_attrs["enqueued"] == "reference"
    for t in trials:
        assert t.user_attrs["epochs_run"] >= 1 and len(t.user_attrs["mlflow_run_id"]) == 32
        assert 0 <= t.user_attrs["overhead_share"] < 1
        # Validation: the baselines, each epoch's short rollout and (when completed) the final one.
        val_seconds = t.user_attrs["validation_seconds"]
        assert 0 < val_seconds < t.user_attrs["trial_seconds"]
        assert t.user_attrs["validation_share"] == pytest.approx(val_seconds / t.user_attrs["trial_seconds"])
        assert f"trial {t.number} {t.state.name}: " in result.stderr
    confirmations = study(runs, "smoke.confirm").get_trials()      # the spec's confirm section ran after it
    assert confirmations and all(t.state == TrialState.COMPLETE for t in confirmations)
    assert len(re.findall(r"\(validation \d+%, harness \d+%\)", result.stderr)) == 3 + len(confirmations)
    assert "best of the search: trial" in result.stderr and "harness best --study smoke" in result.stderr


def test_smoke_study_logs_a_parent_and_one_nested_run_per_trial(smoke):
    runs, _ = smoke
    client, parents, trial_runs = mlflow_runs(runs, "smoke")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trial_runs) == 3
    by_number = {int(r.data.tags["harness.trial"]): r for r in trial_runs}
    for t in study(runs, "smoke").get_trials():
        run = by_number[t.number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["harness.state"] == t.state.name
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[t.state.name]
        assert run.data.params["lr"] == str(t.params["lr"])
        history = client.get_metric_history(run.info.run_id, metric_key("val_psnr"))
        assert [m.step for m in history] == list(range(t.user_attrs["epochs_run"]))
        for key in ("loss", "recon", "kl", "beta", "tfr"):
            assert len(client.get_metric_history(run.info.run_id, metric_key(key))) == len(history)
        assert TRIAL_ARTIFACTS | {"checkpoint/last.pt"} <= artifact_names(client, run.info.run_id)
        if t.state == TrialState.COMPLETE:
            per_frame = client.get_metric_history(run.info.run_id, metric_key("val_psnr_per_frame"))
            # Frames 1..31 by frame number: frame 0 is given, and its capped 100 dB is left out.
            assert sorted(m.step for m in per_frame) == list(range(1, 32))
            assert run.data.metrics[metric_key("final_val_psnr")] == pytest.approx(t.value)
            repeat = client.get_metric_history(run.info.run_id,
                                               metric_key("baseline_repeat_first_frame_per_frame"))
            assert len(repeat) == 31 and all(m.value < 60 for m in repeat)


def test_rerun_continues_the_study_and_best_export_feeds_generate(smoke, tmp_path):
    runs, _ = smoke
    again = ok(harness("sweep", "--study", "smoke", "--runs-dir", str(runs), "--n-trials", "4", "--device", "cpu"))
    assert "this worker ran 1" in again.stderr
    trials = study(runs, "smoke").get_trials()
    assert len(trials) == 4 and trials[3].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert len(mlflow_runs(runs, "smoke")[2]) == 4

    nothing_left = ok(harness("sweep", "--study", "smoke", "--runs-dir", str(runs), "--n-trials", "4"))
    assert "this worker ran 0" in nothing_left.stderr

    out = tmp_path / "best"
    ok(harness("best", "--study", "smoke", "--export", "ckpt", "--out", str(out), "--runs-dir", str(runs)))
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trial"] == best.number and metrics["final_val_psnr"] == pytest.approx(best.value)
    model, config = load_model(out / "checkpoint.pt", "cpu")
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == pytest.approx(best.params["lr"]) == config.lr
    generated = ok(harness("generate", "--ckpt", str(out / "checkpoint.pt"), "--out", str(tmp_path / "gen"),
                           "--length", "8"))
    assert (tmp_path / "gen" / "submission.csv").is_file(), generated.stderr


def test_studies_and_report_list_what_the_storage_holds(smoke, tmp_path):
    runs, _ = smoke
    listing = ok(harness("studies", "--runs-dir", str(runs))).stdout
    assert "smoke" in listing and "COMPLETE" in listing
    table = ok(harness("report", "--study", "smoke", "--runs-dir", str(runs),
                       "--csv", str(tmp_path / "r.csv"), "--markdown", str(tmp_path / "r.md")))
    import pandas as pd
    frame = pd.read_csv(tmp_path / "r.csv")
    trials = study(runs, "smoke").get_trials()
    assert list(frame.trial) == [t.number for t in trials]
    assert list(frame.state) == [t.state.name for t in trials]
    assert list(frame.mlflow_run_id) == [t.user_attrs["mlflow_run_id"] for t in trials]
    assert frame.loc[0, "note"] == "reference" and frame.loc[0, "gain_vs_reference"] == pytest.approx(0)
    assert (tmp_path / "r.md").read_text().startswith("|") and "kl_anneal_type" in table.stdout


def check_html_report(folder: Path, trials: list, tmp_path: Path) -> str:
    """The report folder is whole and matches the study; returns the page after its scripts ran."""
    page = (folder / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    for name in images:
        with Image.open(folder / name) as image:
            image.verify()
            assert image.format == ("GIF" if name.endswith(".gif") else "PNG"), name
    for name in re.findall(r'<a href="([^"]+)"', page):
        assert (folder / name).is_file(), name
    table = pd.read_csv(folder / "trials.csv")
    assert sorted(table.trial) == [t.number for t in trials]
    assert dict(zip(table.trial, table.state)) == {t.number: t.state.name for t in trials}
    complete = {t.number: t.value for t in trials if t.state == TrialState.COMPLETE}
    for number, value in complete.items():
        assert table.set_index("trial").final_psnr[number] == pytest.approx(value)
    assert page.count('<tr class="state-') == len(trials)

    dom, console = load_page(folder / "index.html", tmp_path / "screenshot.png")
    assert console == [], console
    assert 'data-sortable="ready"' in dom            # the table's script ran
    with Image.open(tmp_path / "screenshot.png") as shot:
        assert shot.format == "PNG" and shot.size[0] == 1280
    return page


def test_html_report_renders_the_study_and_logs_it_to_mlflow(smoke, tmp_path):
    runs, _ = smoke
    out = tmp_path / "report"
    result = ok(harness("report", "--study", "smoke", "--html", "--out", str(out), "--runs-dir", str(runs)))
    assert "report: section 8/8, rollout" in result.stderr   # it says what it is doing
    trials = study(runs, "smoke").get_trials()
    page = check_html_report(out, trials, tmp_path)
    for name in ("best_trial_schedules.png", "curves_by_anneal.png", "psnr_per_frame_by_anneal.png",
                 "optimization_history.png", "param_importances.png", "best_rollout.gif"):
        assert f'src="{name}"' in page
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert f"best: trial {best.number}, {best.value:.2f} dB" in page
    curves = pd.read_csv(out / "curves.csv")
    for t in trials:   # every trial's curve, as long as it ran
        assert list(curves[curves.trial == t.number].epoch) == list(range(t.user_attrs["epochs_run"]))
    client, parents, _ = mlflow_runs(runs, "smoke")
    assert {"report/index.html", "report/curves_by_anneal.png"} <= artifact_names(client, parents[0].info.run_id)


def test_ui_serves_the_runs_directory_store(smoke):
    runs, _ = smoke
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", "ui", "--runs-dir", str(runs),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=smoke"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = json.loads(response.read())
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the UI did not come up"
                time.sleep(1)
        assert body["experiment"]["name"] == "smoke"
    finally:
        process.terminate()
        process.wait(timeout=60)
    # Stopping `harness ui` stops the server it started (and the server's own workers) with it.
    deadline = time.monotonic() + 30
    while _answers(url) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _answers(url), "the MLflow UI outlived `harness ui`"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


# -- pruning, failures, concurrency, bad input ---------------------------------------------------
def test_pruned_and_failed_trials_are_recorded_and_the_study_goes_on(tiny_data_root, tmp_path, runs_dir):
    # Trial 1 barely trains (lr 1e-7), so the median pruner stops it after epoch 0; trial 2's KL weight
    # makes its loss infinite (beta is 1 from the start with kl_anneal_type None): it diverges.
    spec = write_spec(
        tmp_path / "faults.yaml", tiny_data_root, n_trials=4,
        fixed={"f_dim": 16, "l_dim": 8, "n_dim": 4, "d_out_dim": 16, "batch_size": 4, "baselines": False,
               "kl_anneal_type": "None"},
        search_space={"lr": {"type": "categorical", "choices": [0.004, 1.0e-7]},
                      "w_kl": {"type": "categorical", "choices": [1.0, 1.0e300]}},
        pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        enqueue=[{"lr": 0.004, "w_kl": 1.0}, {"lr": 1.0e-7, "w_kl": 1.0}, {"lr": 0.004, "w_kl": 1.0e300},
                 {"lr": 0.004, "w_kl": 1.0}])
    runs = tmp_path / "runs"
    result = ok(harness("sweep", "--study", str(spec), "--runs-dir", str(runs), "--device", "cpu"))

    trials = study(runs, "faults").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].last_step == 0 and trials[1].user_attrs["epochs_run"] == 1
    assert trials[2].user_attrs["fail_reason"].startswith("diverged at epoch 1: non-finite loss or gradients in")
    assert "trial 2 FAIL: diverged" in result.stderr and "Traceback" not in result.stderr

    client, _, trial_runs = mlflow_runs(runs, "faults")
    by_number = {int(r.data.tags["harness.trial"]): r for r in trial_runs}
    assert [by_number[n].info.status for n in range(4)] == ["FINISHED", "KILLED", "FAILED", "FINISHED"]
    assert [by_number[n].data.tags["harness.state"] for n in range(4)] == ["COMPLETE", "PRUNED", "FAIL", "COMPLETE"]
    pruned = by_number[1].info.run_id
    assert len(client.get_metric_history(pruned, metric_key("val_psnr"))) == 1      # what it logged before it stopped
    assert {"loss.png", "checkpoint/last.pt"} <= artifact_names(client, pruned)
    assert "diverged" in by_number[2].data.tags["harness.message"]

    out = tmp_path / "report"
    ok(harness("report", "--study", "faults", "--html", "--out", str(out), "--runs-dir", str(runs)))
    page = check_html_report(out, trials, tmp_path)
    assert page.count('<tr class="state-PRUNED">') == 1 and page.count('<tr class="state-FAIL">') == 1
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves[curves.trial == 1].epoch) == [0]       # the pruned trial, up to where it stopped
    assert 2 not in set(curves.trial)                          # diverged in its first step: no epoch


def test_two_workers_share_one_study_on_the_default_storage(tiny_data_root, tmp_path, runs_dir):
    one_epoch = {"epochs": 1, "train_vi_len": 4, "partial": 0.25, "val_epoch_len": 6, "val_vi_len": 24,
                 "val_max_sequences": 1}
    spec = write_spec(tmp_path / "pair.yaml", tiny_data_root, n_trials=4, budget=one_epoch)
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "harness.cli", "sweep", "--study", str(spec), "--runs-dir", str(runs),
               "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for _ in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
        assert "database is locked" not in err
        ran = int(err.rsplit("this worker ran ", 1)[1].split()[0])
        assert ran >= 1, err[-2000:]     # both made progress

    trials = study(runs, "pair").get_trials()
    assert len(trials) >= 4 and all(t.state == TrialState.COMPLETE for t in trials)
    _, parents, trial_runs = mlflow_runs(runs, "pair")
    assert len(parents) == 1
    assert sorted(int(r.data.tags["harness.trial"]) for r in trial_runs) == [t.number for t in trials]
    # A rerun extends the study; no two sampled trials, from either worker or the rerun, share a point.
    ok(harness("sweep", "--study", str(spec), "--runs-dir", str(runs), "--device", "cpu", "--n-trials",
               str(len(trials) + 2)))
    points = [t.params["lr"] for t in study(runs, "pair").get_trials()]
    assert len(points) == len(trials) + 2 and len(set(points)) == len(points)


def test_a_changed_spec_cannot_continue_an_old_study(tiny_data_root, tmp_path, runs_dir):
    runs = tmp_path / "runs"
    spec = write_spec(tmp_path / "drift.yaml", tiny_data_root, n_trials=1)
    ok(harness("sweep", "--study", str(spec), "--runs-dir", str(runs), "--device", "cpu"))
    write_spec(spec, tiny_data_root, n_trials=2,
               search_space={"lr": {"type": "float", "low": 1e-4, "high": 5e-3, "log": True}})
    result = harness("sweep", "--study", str(spec), "--runs-dir", str(runs))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "different drift.yaml" in result.stderr

    # The one-trial study still has a report; importances need more trials, and the page says so.
    out = tmp_path / "report"
    ok(harness("report", "--study", "drift", "--html", "--out", str(out), "--runs-dir", str(runs)))
    page = check_html_report(out, study(runs, "drift").get_trials(), tmp_path)
    assert "Parameter importances: not available" in page


@pytest.mark.parametrize("args, message", [
    (["sweep", "--study", "no_such_study"], "no_such_study: unknown study"),
    (["sweep", "--study", "smoke", "--n-trials", "0"], "--n-trials must be >= 1"),
    (["report", "--study", "missing"], "--study missing: no such study"),
    (["best", "--study", "missing", "--export", "ckpt"], "--study missing: no such study"),
])
def test_bad_input_is_one_line(args, message, tmp_path):
    result = harness(*args, "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_bad_spec_file_is_one_line_naming_file_and_key(tiny_data_root, tmp_path):
    spec = write_spec(tmp_path / "bad.yaml", tiny_data_root, pruner={"type": "sometimes"})
    result = harness("sweep", "--study", str(spec), "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and str(spec) in result.stderr and "pruner.type" in result.stderr
    assert result.stderr.count("\n") == 1


def test_best_of_a_study_without_completed_trials_is_an_error(tiny_data_root, runs_dir):
    runs = runs_dir
    storage = resolve_stores(runs).storage_url
    optuna.create_study(study_name="empty", storage=storage, direction="maximize")
    result = harness("best", "--study", "empty", "--export", "ckpt", "--runs-dir", str(runs))
    assert result.returncode == 2 and "no completed trial" in result.stderr
    report = harness("report", "--study", "empty", "--html", "--runs-dir", str(runs))
    assert report.returncode == 2 and report.stderr == "error: --study empty: the study has no trials yet; nothing to report\n"
