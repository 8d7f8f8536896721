"""What a training run sends to its trial's MLflow run while it trains: the trainer's side of
`tracking`, apart so that commands that only read a store need not import the trainer (and torch)."""
from __future__ import annotations

import math
import time
from pathlib import Path

from models.checkpoint_files import LAST_CHECKPOINT
from models.trainer import Callback, Trainer, TrainResult

from harness.outputs import run_folder
from harness.store.tracking import StudyTracker, baseline_key, epoch_metrics


def final_metrics(trainer: Trainer, result: TrainResult) -> dict[str, float]:
    """What a finished run logs once: best and final PSNR (whole frame, figure, background), epochs;
    the region means are NaN, so left out, on data without masks."""
    summary = {"best_val_psnr": result.best_val_psnr, "epochs_run": result.epochs_run}
    if result.status == "completed":
        summary |= {"final_val_psnr": result.final_val_psnr, "final_val_seconds": result.final_val_seconds,
                    "final_val_psnr_figure": result.final_val_psnr_figure,
                    "final_val_psnr_background": result.final_val_psnr_background}
    return {key: value for key, value in summary.items() if math.isfinite(value)}


class MlflowTrialLogger(Callback):
    """Sends a run's per-epoch metrics to its trial's MLflow run, and at the end its curves and files,
    under `prefix` (one seed of several: `seed_prefix`). With `checkpoint_every` k > 0, the epoch's
    checkpoint goes to the run after every k-th epoch too: a retry on a worker that shares no disk
    with this one resumes from it."""

    def __init__(self, tracker: StudyTracker, run_id: str, trial_dir: Path, prefix: str = "",
                 checkpoint_every: int = 0):
        self.tracker = tracker
        self.run_id = run_id
        self.trial_dir = trial_dir
        self.prefix = prefix
        self.checkpoint_every = checkpoint_every
        self.upload_seconds = 0.0       # spent uploading checkpoints after epochs

    def _log(self, values: dict[str, float], step: int = 0) -> None:
        self.tracker.log_metrics(self.run_id, {self.prefix + key: value for key, value in values.items()}, step)

    def on_train_start(self, trainer: Trainer) -> None:
        baselines = {baseline_key(name): run_folder.mean_psnr(values) for name, values in trainer.baselines.items()}
        baselines |= {baseline_key(name, region): run_folder.mean_psnr(values, skip_nan=True)
                      for name, by_region in trainer.region_baselines.items() for region, values in by_region.items()}
        if baselines:
            self._log(baselines)
        for row in trainer.history:     # a resumed trial: the restored epochs, so its curves are whole
            self._log(epoch_metrics(row), step=int(row["epoch"]))

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self._log(epoch_metrics(metrics), step=int(metrics["epoch"]))
        checkpoint = trainer.checkpoint_dir / LAST_CHECKPOINT if trainer.checkpoint_dir else None
        if (self.checkpoint_every and trainer.epoch % self.checkpoint_every == 0
                and checkpoint is not None and checkpoint.is_file()):
            started = time.perf_counter()
            self.tracker.upload_checkpoint(self.run_id, checkpoint, self.prefix)
            self.upload_seconds += time.perf_counter() - started

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        # RunOutputs runs before this callback, so the folder already holds the final files.
        self._log(final_metrics(trainer, result))
        self.tracker.log_series(self.run_id, self.prefix + "val_psnr_per_frame", trainer.val_psnr_per_frame)
        for region, values in trainer.val_region_psnr_per_frame.items():
            self.tracker.log_series(self.run_id, f"{self.prefix}val_psnr_{region}_per_frame", values)
        for name, values in trainer.baselines.items():
            self.tracker.log_series(self.run_id, f"{self.prefix}{baseline_key(name)}_per_frame", values)
            for region, curve in trainer.region_baselines.get(name, {}).items():
                self.tracker.log_series(self.run_id, f"{self.prefix}{baseline_key(name, region)}_per_frame", curve)
        self.tracker.log_files(self.run_id, self.trial_dir, self.prefix)
