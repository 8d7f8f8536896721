"""The command line end to end on tiny data: train, resume, generate, and one-line errors."""
import csv
import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from harness.cli import main

TINY = ["--f-dim", "16", "--l-dim", "8", "--n-dim", "4", "--d-out-dim", "16", "--train-vi-len", "8",
        "--val-vi-len", "24", "--batch-size", "4", "--device", "cpu", "--partial", "0.5"]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", [[], ["data"], ["data", "synth"], ["train"], ["generate"]])
def test_help_describes_every_command(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    if command == ["train"]:
        for option in ("--kl-anneal-type", "--tfr-sde", "--w-kl", "--resume", "--val-samples", "--seed"):
            assert option in result.output


def test_data_synth_writes_the_lab_layout(tmp_path):
    out = tmp_path / "synth"
    result = run("data", "synth", "--out", out, "--train-videos", 2, "--val-videos", 1, "--test-videos", 1,
                 "--frames", 16, "--val-frames", 20)
    assert result.exit_code == 0, result.output
    assert len(list((out / "train" / "train_img").glob("frame*.png"))) == 32
    assert len(list((out / "val" / "val_label").glob("frame*.png"))) == 20
    assert len(list((out / "test" / "test_label" / "0").glob("frame*.png"))) == 20
    assert len(list((out / "val" / "val_mask").glob("frame*.png"))) == 20
    assert json.loads((out / "synth.json").read_text())["appearance"] == "default"
    again = run("data", "synth", "--out", out)
    assert_one_line_error(again, str(out), "not an empty folder")
    shifted = run("data", "synth", "--out", tmp_path / "shifted", "--train-videos", 1, "--val-videos", 1,
                  "--test-videos", 1, "--frames", 4, "--val-frames", 4, "--appearance", "shifted")
    assert shifted.exit_code == 0, shifted.output
    assert json.loads((tmp_path / "shifted" / "synth.json").read_text())["appearance"] == "shifted"


@pytest.fixture(scope="module")
def trained_run(tiny_data_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = run("train", "--data", tiny_data_root, "--out", run_dir, "--epochs", 2, *TINY)
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.mark.slow
def test_train_writes_metrics_plots_gif_and_checkpoints(trained_run):
    rows = list(csv.DictReader(open(trained_run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"loss", "recon", "kl", "beta", "tfr", "val_psnr"} <= set(rows[0])
    summary = json.loads((trained_run / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == 2
    assert set(summary["baselines"]) == {"repeat first frame", "untrained model"}
    for png in ("loss.png", "schedules.png", "psnr_per_frame.png"):
        image = iio.imread(trained_run / png)
        assert image.ndim == 3 and image.std() > 0
    gif = iio.imread(trained_run / "rollout.gif", index=None)
    assert gif.shape[0] == 24
    psnr = list(csv.DictReader(open(trained_run / "psnr_per_frame.csv")))
    assert len(psnr) == 24 and {"model", "repeat first frame", "untrained model"} <= set(psnr[0])
    assert {"model figure", "model background", "repeat first frame figure",
            "untrained model background"} <= set(psnr[0])
    assert {"val_psnr_figure", "val_psnr_background"} <= set(rows[0])
    assert {"final_val_psnr_figure", "baselines_figure"} <= set(summary)
    assert (trained_run / "checkpoints" / "last.pt").is_file()
    assert "kl_anneal_type: Cyclical" in (trained_run / "config.yaml").read_text()


@pytest.mark.slow
def test_existing_run_needs_resume_and_resume_rejects_changed_options(trained_run, tiny_data_root):
    again = run("train", "--data", tiny_data_root, "--out", trained_run, "--epochs", 2, *TINY)
    assert_one_line_error(again, "--resume", str(trained_run))
    changed = run("train", "--out", trained_run, "--resume", "--lr", "0.5")
    assert_one_line_error(changed, "--lr", "0.5")
    done = run("train", "--out", trained_run, "--resume")   # already complete: nothing to do
    assert done.exit_code == 0, done.output


@pytest.mark.slow
def test_a_run_started_on_a_gpu_resumes_here_on_the_cpu(trained_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(trained_run, moved)
    checkpoint = moved / "checkpoints" / "last.pt"
    state = torch.load(checkpoint, weights_only=False)
    state["config"] = {**state["config"], "device": "cuda", "epochs": 3}    # as a GPU run of 3 epochs wrote it
    torch.save(state, checkpoint)
    if not torch.cuda.is_available():
        assert_one_line_error(run("train", "--out", moved, "--resume"), "cuda")
    resumed = run("train", "--out", moved, "--resume", "--device", "cpu")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.output and "training on cpu" in resumed.output
    summary = json.loads((moved / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == 3


@pytest.mark.slow
def test_generate_writes_gif_submission_and_psnr(trained_run, tiny_data_root, tmp_path):
    out = tmp_path / "gen"
    result = run("generate", "--ckpt", trained_run / "checkpoints" / "last.pt", "--data", tiny_data_root,
                 "--out", out, "--length", 20, "--samples", 2)
    assert result.exit_code == 0, result.output
    # Each rollout says what it is doing and how long it took (a full one takes a minute on a CPU).
    for name in ("model", "baseline repeat first frame", "baseline untrained model"):
        assert f"{name}: rolling out" in result.output and f"{name}: done in" in result.output
    assert iio.imread(out / "rollout_0.gif", index=None).shape[0] == 20
    submission = np.loadtxt(out / "submission.csv", delimiter=",", skiprows=1, dtype=np.int64)
    header = (out / "submission.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "id" and len(header) == 1 + 3 * 32 * 64
    assert submission.shape == (20, 1 + 3 * 32 * 64)
    assert submission[:, 0].tolist() == list(range(20))
    assert submission[:, 1:].min() >= 0 and submission[:, 1:].max() <= 255
    # Row 0 is the given first frame, flattened in C, H, W order.
    first = iio.imread(tiny_data_root / "test" / "test_img" / "0" / "frame0.png")
    assert submission[0, 1:].tolist() == first.transpose(2, 0, 1).reshape(-1).tolist()
    psnr = list(csv.DictReader(open(out / "psnr_per_frame.csv")))
    # The model and both baselines on the same rollout, 20 frames each.
    assert [row["curve"] for row in psnr] == ["model"] * 20 + ["repeat first frame"] * 20 + ["untrained model"] * 20
    assert {"psnr", "psnr_figure", "psnr_background"} <= set(psnr[0])
    truth = [iio.imread(tiny_data_root / "test" / "test_img" / "0" / f"frame{i}.png") / 255 for i in (0, 7)]
    by_hand = 10 * np.log10(1 / np.mean((truth[0] - truth[1]) ** 2))
    assert float(psnr[20 + 7]["psnr"]) == pytest.approx(by_hand, abs=1e-3)
    assert iio.imread(out / "psnr_per_frame.png").std() > 0
    for name in ("model", "repeat first frame", "untrained model"):
        assert f"mean PSNR over predicted frames, {name}: " in result.output
    assert "(figure " in result.output and " dB, background " in result.output


def test_bad_inputs_are_one_line_errors(tmp_path, tiny_data_root):
    assert_one_line_error(run("train", "--data", tmp_path, "--out", tmp_path / "r", *TINY), str(tmp_path))
    assert_one_line_error(run("train", "--data", tiny_data_root, "--out", tmp_path / "r", "--partial", "2"),
                          "partial")
    wrong_size = run("train", "--data", tiny_data_root, "--out", tmp_path / "r", "--height", "64", *TINY[:-2])
    assert_one_line_error(wrong_size, "frame0.png", "expected 64x64")
    bad_yaml = tmp_path / "c.yaml"
    bad_yaml.write_text("epochs: 3\nlearning_rate: 0.1\n")
    assert_one_line_error(run("train", "--out", tmp_path / "r", "--config", bad_yaml), "learning_rate")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    assert_one_line_error(run("generate", "--ckpt", junk, "--out", tmp_path / "g"), "junk.pt")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_train_without_data_generates_the_synthetic_set_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))     # not the session's, which others fill
    args = ["train", "--epochs", 1, *TINY[:-2], "--partial", "0.02", "--val-vi-len", 16,
            "--val-max-sequences", 1, "--no-baselines"]
    first = run(*args, "--out", tmp_path / "a")
    assert first.exit_code == 0, first.output
    assert "generating the synthetic data set once" in first.output
    second = run(*args, "--out", tmp_path / "b")
    assert second.exit_code == 0, second.output
    assert "generating" not in second.output
    summary = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert summary["data"].endswith("v2-32x64-seed0") and summary["epochs_run"] == 1


def test_studies_on_a_folder_without_a_store_says_so_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_STORAGE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    empty = tmp_path / "not-a-runs-dir"
    empty.mkdir()
    result = run("studies", "--runs-dir", empty)
    assert result.exit_code == 0, result.output
    assert "holds no study store" in result.output and str(empty) in result.output
    assert list(empty.iterdir()) == []


def test_a_bug_is_reported_as_a_bug_with_a_crash_log(tmp_path, monkeypatch):
    import harness.cli.studies as commands

    def broken(*args, **kwargs):
        raise ValueError("deep inside a library")

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_DEBUG", raising=False)
    monkeypatch.setattr(commands, "stores_from_options", broken)
    result = run("studies", "--runs-dir", tmp_path)
    assert result.exit_code == 1, result.output
    assert "bug: ValueError: deep inside a library" in result.output and "Traceback" not in result.output
    logs = list((tmp_path / "cache" / "logs").glob("crash-*.log"))
    assert len(logs) == 1 and "deep inside a library" in logs[0].read_text()
