"""The training loop: resume equality, divergence, callbacks, checkpoints, figure/background PSNR."""
import copy
import dataclasses
import json
import math

import pandas as pd
import pytest
import torch

from harness.outputs.names import METRICS_CSV, METRICS_JSON, PSNR_CSV
from harness.outputs.run_folder import RunOutputs
from harness.worker.mlflow_logger import MlflowTrialLogger
from models.checkpoint import CheckpointError, load_checkpoint, load_model
from models.config import TrainConfig
from models.augment import add_noise
from models.records import BEST_CHECKPOINT, LAST_CHECKPOINT, Callback
from models.trainer import Trainer


class StopAfter(Callback):
    """Stops its trainer (given after the trainer is made) once it has trained `epochs` epochs."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.trainer: Trainer | None = None

    def on_epoch_end(self, record):
        if record.epoch + 1 >= self.epochs:
            self.trainer.request_stop("test asked to stop")


def stopped_after(epochs: int, *args) -> Trainer:
    """A Trainer(*args) with a StopAfter(epochs) callback of its own."""
    stop = StopAfter(epochs)
    trainer = Trainer(*args, [stop])
    stop.trainer = trainer
    return trainer


def without_seconds(record) -> dict:
    return {k: v for k, v in record.row().items() if "seconds" not in k}


@pytest.mark.slow
def test_resumed_run_ends_equal_to_an_uninterrupted_one(tiny_data, tiny_config, tmp_path):
    # Both teacher-forcing branches in play, noise augmentation drawing from the saved noise RNG, the
    # weights' average and a learning rate that depends on the step.
    config = tiny_config.replace(epochs=3, tfr=0.5, tfr_sde=0, input_noise=0.05, ema=0.9, lr_schedule="cosine",
                                 partial=0.5)
    straight = Trainer(config, tiny_data, tmp_path / "straight")
    straight.fit()
    assert any(0 < r.teacher_forced < 1 for r in straight.records)

    interrupted = stopped_after(1, config, tiny_data, tmp_path / "resumed")
    first = interrupted.fit()
    assert (first.status, first.epochs_run) == ("stopped", 1)
    resumed = Trainer.resume(tmp_path / "resumed" / "checkpoints" / LAST_CHECKPOINT, tiny_data, tmp_path / "resumed")
    assert resumed.epoch == 1
    result = resumed.fit()

    assert result.status == "completed" and result.epochs_run == 3
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    for key, value in straight.averaged.state_dict().items():
        torch.testing.assert_close(resumed.averaged.state_dict()[key], value, rtol=0, atol=0, msg=key)
    for a, b in zip(straight.records, resumed.records, strict=True):
        assert without_seconds(a) == without_seconds(b)
    assert resumed.curves == straight.curves and resumed.curves.regions
    assert resumed.baselines == straight.baselines and resumed.baselines["untrained model"].regions


def poison_from(trainer: Trainer, monkeypatch, first_call: int, last_call: float = math.inf) -> None:
    """Make the KL of the training passes first_call..last_call (counted from 1) NaN."""
    real = trainer.model.reconstruct
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        pred, kl = real(*args, **kwargs)
        calls["n"] += 1
        if first_call <= calls["n"] <= last_call:
            kl = kl * math.nan
        return pred, kl

    monkeypatch.setattr(trainer.model, "reconstruct", poisoned)


def test_one_non_finite_loss_skips_its_update(tiny_data, tiny_config, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config.replace(epochs=2, baselines=False), tiny_data, tmp_path)
    poison_from(trainer, monkeypatch, trainer.steps_per_epoch + 3, trainer.steps_per_epoch + 3)
    result = trainer.fit()
    assert result.status == "completed"
    assert [r.skipped_steps for r in result.records] == [0, 1]
    assert all(math.isfinite(r.loss) for r in result.records)     # the mean of the steps that updated


def test_persistent_non_finite_loss_diverges_at_the_epochs_end_with_its_counts(tiny_data, tiny_config, tmp_path,
                                                                               monkeypatch):
    trainer = Trainer(tiny_config.replace(epochs=3, baselines=False), tiny_data, tmp_path)
    poison_from(trainer, monkeypatch, trainer.steps_per_epoch + 3)      # from the 2nd epoch's 3rd step on
    steps = trainer.steps_per_epoch
    assert steps - 2 > max(1, steps // 4)       # more than a quarter of the epoch's steps skipped
    result = trainer.fit()
    assert result.status == "diverged"
    # Skip decisions stay on the device during the epoch: read, and judged, at its end.
    assert result.message == (f"diverged at epoch 2: non-finite loss or gradients in {steps - 2} of {steps} steps, "
                              f"{(steps - 2) // 2} rewind(s) to the epoch's start")
    assert result.epochs_run == 1
    # The last good checkpoint (epoch 0) is intact.
    assert load_checkpoint(tmp_path / "checkpoints" / LAST_CHECKPOINT)["epoch"] == 1


def test_weights_gone_bad_rewind_to_the_epochs_start_and_training_goes_on(tiny_data, tiny_config, tmp_path):
    """An update that leaves the weights overflowing on every input (finite, but far too large: the
    gated FFNs multiply them to inf; a skipped update never writes a non-finite weight) makes every
    later step fail: after two in a row the trainer restores the weights and optimizer of the
    epoch's start and goes on with the next batch."""
    at_start = {}

    class Spoil(Callback):
        trainer: Trainer

        def on_epoch_start(self, epoch):
            at_start[epoch] = copy.deepcopy(self.trainer.model.state_dict())

        def on_step_end(self, step):
            if step.epoch == 1 and step.step == 1:
                with torch.no_grad():
                    next(self.trainer.model.parameters()).fill_(1e30)
            if step.epoch == 1 and step.step == 3:     # steps 2 and 3 failed: rewound
                for key, value in at_start[1].items():
                    torch.testing.assert_close(self.trainer.model.state_dict()[key], value, rtol=0, atol=0, msg=key)

    spoil = Spoil()
    trainer = Trainer(tiny_config.replace(epochs=2, baselines=False), tiny_data, tmp_path, [spoil])
    spoil.trainer = trainer
    assert trainer.steps_per_epoch >= 6
    result = trainer.fit()
    assert result.status == "completed"
    assert [r.skipped_steps for r in result.records] == [0, 2]
    assert [r.rewinds for r in result.records] == [0, 1]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_a_checkpoint_every_epoch_with_everything_to_resume(tiny_data, tiny_config, tmp_path):
    seen = []

    class Inspect(Callback):
        def on_epoch_end(self, record):
            state = load_checkpoint(tmp_path / "checkpoints" / LAST_CHECKPOINT)
            seen.append(state["epoch"])
            # No random state: every stream is re-seeded from the seed and the epoch (models.seeds).
            assert set(state) >= {"model", "optimizer", "kl_annealing", "teacher_forcing", "config", "history",
                                  "epoch"}

    config = tiny_config.replace(partial=0.5, baselines=False)
    Trainer(config, tiny_data, tmp_path, [Inspect()]).fit()
    assert seen == [1, 2]
    assert (tmp_path / "checkpoints" / BEST_CHECKPOINT).is_file()
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    model, model_config = load_model(tmp_path / "checkpoints" / LAST_CHECKPOINT)
    assert model_config == config and not model.training
    # Loaded with the CPU's execution defaults, as the trainer runs it (harness generate uses this).
    assert model.frame_encoder.net[-1].weight.is_contiguous(memory_format=torch.channels_last)


def test_metrics_record_the_schedules_per_epoch(tiny_data, tiny_config):
    config = tiny_config.replace(epochs=4, kl_anneal_type="Monotonic", tfr=1.0, tfr_sde=2, tfr_d_step=0.5,
                                 partial=0.5, baselines=False)
    result = Trainer(config, tiny_data).fit()
    assert [r.beta for r in result.records] == pytest.approx([0, 0.25, 0.5, 0.75])
    assert [r.tfr for r in result.records] == pytest.approx([1, 1, 0.5, 0])
    # teacher forcing is drawn per batch with probability tfr: always at 1, never at 0
    assert [r.teacher_forced for r in result.records][::3] == [1.0, 0.0]
    assert all(math.isfinite(r.val_psnr) for r in result.records)


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_noise_augmentation_perturbs_each_sequence_within_its_bound(tiny_data, tiny_config):
    trainer = Trainer(tiny_config, tiny_data)
    trainer.start()
    steps = trainer.epoch_steps()
    batch = next(steps).batch
    assert batch.inputs is batch.frames    # input_noise 0: the lab's recipe
    frames = torch.rand(64, 4, 3, 8, 8) * 0.5 + 0.25   # away from 0 and 1: clamping does not hide noise
    noisy = add_noise(frames, 0.2, torch.Generator().manual_seed(0))
    assert noisy.min() >= 0 and noisy.max() <= 1
    stds = (noisy - frames).flatten(1).std(dim=1)
    # One std per sequence, drawn uniformly in [0, 0.2]: spread over the range, never above it.
    assert stds.max() < 0.2 * 1.1 and stds.min() < 0.05 and stds.max() > 0.15
    assert abs(stds.mean().item() - 0.1) < 0.03


@pytest.mark.slow
def test_short_training_raises_validation_psnr_above_the_untrained_model(tiny_data, tiny_config):
    config = tiny_config.replace(f_dim=32, d_out_dim=32, epochs=4, lr=2e-3, kl_anneal_type="None",
                                 tfr=1.0, tfr_sde=2, tfr_d_step=0.25)
    result = Trainer(config, tiny_data).fit()
    untrained = result.baselines["untrained model"].mean()
    losses = [r.recon for r in result.records]
    # Measured on this data, seeds 0, 1, 2: recon of the two teacher-forced epochs 0.209 -> 0.167,
    # 0.231 -> 0.150, 0.202 -> 0.116 (free-running epochs 2-3 score their own, higher, loss);
    # best val PSNR above the untrained model by 2.2, 2.3 and 1.7 dB.
    assert losses[1] < 0.85 * losses[0]
    assert result.best_val_psnr > untrained + 1.2


def test_short_epoch_rollouts_are_prefixes_of_the_final_full_rollout(tiny_data, tiny_config, tmp_path):
    config = tiny_config.replace(epochs=2, val_epoch_len=8, partial=0.25, baselines=False)
    result = Trainer(config, tiny_data, tmp_path).fit()

    assert [r.val_frames for r in result.records] == [8, 8]
    assert len(result.curves.whole) == config.val_vi_len
    final = torch.tensor(result.curves.whole)
    assert result.final_val_psnr == pytest.approx(final[1:].mean().item())
    # Same model, same noise stream: the last per-epoch rollout is the first 8 frames of the final one.
    assert result.val_psnr == pytest.approx(final[1:8].mean().item(), abs=1e-4)
    assert result.final_val_seconds > 0


def test_stopped_runs_skip_the_final_rollout(tiny_data, tiny_config, tmp_path):
    result = stopped_after(1, tiny_config.replace(epochs=3, val_epoch_len=8, partial=0.25, baselines=False), tiny_data,
                           tmp_path).fit()
    assert result.status == "stopped" and math.isnan(result.final_val_psnr)
    assert len(result.curves.whole) == 8


# -- PSNR over the figure and over the background -----------------------------------------------------

class RecordingTracker:
    """Stands in for harness.store.tracking.StudyTracker: keeps what MlflowTrialLogger sends."""

    def __init__(self):
        self.metrics: dict[str, list[tuple[int, float]]] = {}
        self.series: dict[str, list[float]] = {}
        self.uploads: list[tuple[str, int]] = []    # (prefix, epochs in the uploaded checkpoint)

    def log_metrics(self, run_id, values, step=0):
        for key, value in values.items():
            self.metrics.setdefault(key, []).append((step, value))

    def log_series(self, run_id, key, values):
        self.series[key] = values

    def log_files(self, run_id, folder, *where):
        pass

    def upload_checkpoint(self, run_id, checkpoint, prefix=""):
        self.uploads.append((prefix, load_checkpoint(checkpoint)["epoch"]))


def test_the_checkpoint_goes_to_the_run_after_every_kth_epoch(tiny_data, tiny_config, tmp_path):
    tracker = RecordingTracker()
    logger = MlflowTrialLogger(tracker, "run", tmp_path, prefix="seed_1/", checkpoint_every=2)
    Trainer(tiny_config.replace(epochs=4, partial=0.25, val_epoch_len=2, baselines=False), tiny_data, tmp_path,
            [logger]).fit()
    # The file uploaded after epochs 2 and 4 is that epoch's own checkpoint, not an older one.
    assert tracker.uploads == [("seed_1/", 2), ("seed_1/", 4)] and logger.upload_seconds > 0
    tracker = RecordingTracker()
    Trainer(tiny_config.replace(epochs=1, partial=0.25, val_epoch_len=2, baselines=False), tiny_data, tmp_path / "never",
            [MlflowTrialLogger(tracker, "run", tmp_path / "never")]).fit()
    assert tracker.uploads == []        # checkpoint_every 0: only the end's files (log_files)


@pytest.fixture(scope="module")
def region_runs(tiny_data, tmp_path_factory):
    """The same short training on the tiny set with its masks and without them:
    {"masked" | "unmasked": (trainer, summary, run folder, tracker)}."""
    config = TrainConfig(f_dim=16, l_dim=8, n_dim=4, d_out_dim=16, epochs=2, batch_size=4, train_vi_len=8,
                         val_vi_len=24, val_epoch_len=8, partial=0.25, kl_anneal_type="Monotonic", tfr_sde=1,
                         device="cpu")
    runs = {}
    for name, data in (("masked", tiny_data), ("unmasked", dataclasses.replace(tiny_data, train_mask=None,
                                                                               val_mask=None))):
        folder, tracker = tmp_path_factory.mktemp(name), RecordingTracker()
        trainer = Trainer(config, data, callbacks=[RunOutputs(folder, "tiny", plots_every_epoch=False),
                                                   MlflowTrialLogger(tracker, "run", folder)])
        runs[name] = trainer, trainer.fit(), folder, tracker
    return runs


def test_history_holds_figure_and_background_psnr_only_on_masked_data(tiny_data, region_runs):
    assert tiny_data.val_mask is not None   # the synthetic set writes masks
    masked, masked_result, _, _ = region_runs["masked"]
    unmasked, unmasked_result, _, _ = region_runs["unmasked"]
    for row in (r.row() for r in masked_result.records):
        # A frame's whole-frame MSE is a mix of its two regions' MSEs: its PSNR lies between theirs.
        low, high = sorted((row["val_psnr_figure"], row["val_psnr_background"]))
        assert low < row["val_psnr"] < high
    assert all("val_psnr_figure" not in row and "val_psnr_background" not in row
               for row in (r.row() for r in unmasked_result.records))
    # Masks only add numbers: training and the whole-frame scores are the same.
    assert [r.val_psnr for r in masked_result.records] == [r.val_psnr for r in unmasked_result.records]

    figure = torch.tensor(masked_result.curves.regions["figure"])
    assert len(figure) == 24    # the final full-length rollout
    assert masked_result.final_val_psnr_figure == pytest.approx(figure[1:].nanmean().item())
    assert masked_result.final_val_psnr_background > masked_result.final_val_psnr_figure
    assert math.isnan(unmasked_result.final_val_psnr_figure) and math.isnan(unmasked_result.final_val_psnr_background)
    assert unmasked_result.curves.regions == {}
    assert all(c.regions == {} for c in unmasked_result.baselines.values())

    # Repeating frame 0 keeps the still background but misses the moving dancer.
    repeat = masked_result.baselines["repeat first frame"].regions
    assert sum(repeat["background"][1:]) > sum(repeat["figure"][1:]) + 5 * 23
    assert {name for name, c in masked_result.baselines.items() if c.regions} == {"repeat first frame",
                                                                                  "untrained model"}


def test_run_files_and_mlflow_get_the_region_psnr_only_on_masked_data(region_runs):
    masked, result, folder, tracker = region_runs["masked"]
    table = pd.read_csv(folder / PSNR_CSV)
    for curve in ("model", "repeat first frame", "untrained model"):
        assert {f"{curve} figure", f"{curve} background"} <= set(table.columns)
    assert table["model figure"].tolist() == pytest.approx(result.curves.regions["figure"], nan_ok=True)
    assert {"val_psnr_figure", "val_psnr_background"} <= set(pd.read_csv(folder / METRICS_CSV).columns)
    summary = json.loads((folder / METRICS_JSON).read_text())
    assert summary["final_val_psnr_figure"] == pytest.approx(result.final_val_psnr_figure)
    assert set(summary["baselines_figure"]) == set(summary["baselines_background"]) == set(summary["baselines"])
    assert [step for step, _ in tracker.metrics["val_psnr_figure"]] == [0, 1]
    assert tracker.metrics["final_val_psnr_background"] == [(0, pytest.approx(result.final_val_psnr_background))]
    for key in ("baseline_repeat_first_frame_figure", "baseline_untrained_model_background"):
        assert key in tracker.metrics
    assert tracker.series["val_psnr_figure_per_frame"] == result.curves.regions["figure"]

    _, _, folder, tracker = region_runs["unmasked"]
    assert not any("figure" in c or "background" in c for c in pd.read_csv(folder / PSNR_CSV).columns)
    assert not any("figure" in c for c in pd.read_csv(folder / METRICS_CSV).columns)
    summary = json.loads((folder / METRICS_JSON).read_text())
    assert not any("figure" in key or "background" in key for key in summary)
    assert not any("figure" in key or "background" in key for key in [*tracker.metrics, *tracker.series])
    assert "final_val_psnr" in tracker.metrics and "val_psnr_per_frame" in tracker.series
