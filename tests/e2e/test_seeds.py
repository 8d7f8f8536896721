"""Seed replication and repeated points, end to end in real processes: both stores hold each seed."""
from __future__ import annotations

import json

import numpy as np
import pytest
from optuna.trial import TrialState

from harness.intervals import mean_interval
from harness.outputs.names import metric_key
from sweep_helpers import artifact_names, harness, mlflow_runs, new_runs, ok, study, write_spec

pytestmark = pytest.mark.slow   # real harness processes


@pytest.fixture(scope="module")
def seeded(tiny_data_root, tmp_path_factory, migrated_mlflow_db):
    """Two trials of two seeds each, the first enqueued."""
    folder = tmp_path_factory.mktemp("seeded")
    spec = write_spec(folder / "seeded.yaml", tiny_data_root, seeds=2, enqueue=[{"lr": 0.002}],
                      pruner={"type": "none"})
    runs = new_runs(folder / "runs", migrated_mlflow_db)
    result = ok(harness("sweep", "--study", str(spec), "--runs-dir", str(runs), "--device", "cpu"))
    return runs, result


def test_a_trial_is_the_mean_of_its_seeds_in_optuna(seeded):
    runs, result = seeded
    trials = study(runs, "seeded").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        assert t.user_attrs["seeds"] == [0, 1]
        values = t.user_attrs["seed_values"]
        assert len(values) == 2 and values[0] != values[1]       # different seeds, different models
        assert t.value == pytest.approx(np.mean(values))
        assert t.user_attrs["value_ci95"] == pytest.approx(mean_interval(values).half_width)
        assert t.user_attrs["best_seed"] == int(np.argmax(values))
        assert f"trial {t.number} COMPLETE: {t.value:.2f} dB ± " in result.stderr


def test_each_seed_is_recorded_in_mlflow_and_the_trial_holds_their_means(seeded):
    runs, _ = seeded
    client, _, trial_runs = mlflow_runs(runs, "seeded")
    by_number = {int(r.data.tags["harness.trial"]): r for r in trial_runs}
    for t in study(runs, "seeded").get_trials():
        run = by_number[t.number]
        metrics = run.data.metrics
        assert [metrics[metric_key(f"seed_{s}/final_val_psnr")] for s in (0, 1)] == pytest.approx(t.user_attrs["seed_values"])
        assert metrics[metric_key("final_val_psnr")] == pytest.approx(t.value)
        assert metrics[metric_key("final_val_psnr_ci95")] == pytest.approx(t.user_attrs["value_ci95"])
        # The trial's curve is the seeds' mean, epoch by epoch; so are the values the pruner saw.
        mean = [m.value for m in client.get_metric_history(run.info.run_id, metric_key("val_psnr"))]
        per_seed = [[m.value for m in client.get_metric_history(run.info.run_id, metric_key(f"seed_{s}/val_psnr"))]
                    for s in (0, 1)]
        assert mean == pytest.approx(np.mean(per_seed, axis=0).tolist())
        assert [t.intermediate_values[e] for e in range(2)] == pytest.approx(mean)
        names = artifact_names(client, run.info.run_id)
        assert {"seed_0/checkpoint/last.pt", "seed_1/checkpoint/last.pt", "seed_0/rollout.gif",
                "seed_1/metrics.csv", "psnr_per_frame.png"} <= names


def test_packed_seeds_record_what_separate_seeds_do(seeded, tmp_path, runs_dir):
    """`--pack 2` trains each trial's two seeds as one batched model: the same trials, values within
    rounding of the unpacked sweep's, and each seed recorded in both stores as before."""
    runs, _ = seeded
    spec = runs.parent / "seeded.yaml"
    packed_runs = tmp_path / "runs"
    ok(harness("sweep", "--study", str(spec), "--runs-dir", str(packed_runs), "--device", "cpu", "--pack", "2"))
    separate, packed = study(runs, "seeded").get_trials(), study(packed_runs, "seeded").get_trials()
    assert [t.params for t in packed] == [t.params for t in separate]
    for a, b in zip(separate, packed):
        assert b.state == TrialState.COMPLETE
        assert b.user_attrs["seed_values"] == pytest.approx(a.user_attrs["seed_values"], abs=0.05)
        assert [b.intermediate_values[e] for e in range(2)] == pytest.approx(
            [a.intermediate_values[e] for e in range(2)], abs=0.05)
    client, _, trial_runs = mlflow_runs(packed_runs, "seeded")
    for run in trial_runs:
        assert {"seed_0/checkpoint/last.pt", "seed_1/checkpoint/last.pt", "seed_1/rollout.gif"} <= \
            artifact_names(client, run.info.run_id)


def test_best_exports_the_best_seed_of_the_best_trial(seeded, tmp_path):
    runs, _ = seeded
    trials = study(runs, "seeded").get_trials()
    best = max(trials, key=lambda t: t.value)
    out = tmp_path / "best"
    result = ok(harness("best", "--study", "seeded", "--export", "ckpt", "--out", str(out), "--runs-dir", str(runs)))
    assert f"exporting seed {best.user_attrs['best_seed']} of 2" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_seed"] == best.user_attrs["best_seed"] and metrics["seed_values"] == best.user_attrs["seed_values"]
    import yaml
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == best.user_attrs["best_seed"]


def test_report_shows_intervals_and_the_gain_over_the_reference(seeded, tmp_path):
    runs, _ = seeded
    csv = tmp_path / "trials.csv"
    ok(harness("report", "--study", "seeded", "--csv", str(csv), "--runs-dir", str(runs)))
    import pandas as pd
    table = pd.read_csv(csv)
    trials = {t.number: t for t in study(runs, "seeded").get_trials()}
    reference = trials[0]
    for _, row in table.iterrows():
        trial = trials[row.trial]
        assert row.seeds == 2 and row.ci95 == pytest.approx(trial.user_attrs["value_ci95"])
        assert row.gain_vs_reference == pytest.approx(trial.value - reference.value)
    assert table.set_index("trial").loc[0, "vs_reference"] == "reference"
    assert table.set_index("trial").loc[1, "vs_reference"] in ("within noise", "better", "worse")


def test_a_sampled_repeat_is_not_trained_and_a_space_without_new_points_ends_the_worker(tiny_data_root, tmp_path, runs_dir):
    # One possible point: the first sampled trial trains, every later one repeats it.
    spec = write_spec(tmp_path / "single.yaml", tiny_data_root, n_trials=3,
                      search_space={"lr": {"type": "categorical", "choices": [0.002]}})
    runs = tmp_path / "runs"
    result = ok(harness("sweep", "--study", str(spec), "--runs-dir", str(runs), "--device", "cpu"))
    trials = study(runs, "single").get_trials()
    trained = [t for t in trials if "repeat_of" not in t.user_attrs]
    repeats = [t for t in trials if "repeat_of" in t.user_attrs]
    assert len(trained) == 1 and trained[0].state == TrialState.COMPLETE
    assert len(repeats) == 20 and {t.user_attrs["repeat_of"] for t in repeats} == {trained[0].number}
    assert all(t.state == TrialState.PRUNED and "mlflow_run_id" not in t.user_attrs for t in repeats)
    assert "search space looks exhausted" in result.stderr
    _, _, trial_runs = mlflow_runs(runs, "single")
    assert len(trial_runs) == 1
