"""What a training run sends to its trial's MLflow run while it trains, from the records it publishes."""
from __future__ import annotations

import math
import time
from pathlib import Path

from harness.outputs.names import (LAST_CHECKPOINT, MODEL, REGIONS, baseline_key, curve_key, epoch_metrics,
                                   final_metric)
from harness.store.tracking import StudyTracker
from models.records import Callback, Curves, EpochRecord, RunStart, RunSummary


def final_metrics(summary: RunSummary) -> dict[str, float]:
    """What a finished run logs once: best and final PSNR (whole frame, figure, background), epochs;
    the region means are NaN, so left out, on data without masks."""
    values = {"best_val_psnr": summary.best_val_psnr, "epochs_run": summary.epochs_run}
    if summary.completed:
        values |= {final_metric(): summary.final(), "final_val_seconds": summary.final_val_seconds,
                   **{final_metric(region): summary.final(region) for region in REGIONS}}
    return {key: value for key, value in values.items() if math.isfinite(value)}


def baseline_metrics(baselines: dict[str, Curves]) -> dict[str, float]:
    """Each baseline's mean PSNR, whole and by region (where the data has masks)."""
    values = {baseline_key(name): curves.mean() for name, curves in baselines.items()}
    values |= {baseline_key(name, region): curves.mean(region)
               for name, curves in baselines.items() for region in curves.regions}
    return values


def curve_series(summary: RunSummary) -> dict[str, tuple[float, ...]]:
    """Every per-frame series a run logs, by its key: the model's last rollout and the baselines', whole
    and by region."""
    series: dict[str, tuple[float, ...]] = {}
    for name, curves in {MODEL: summary.curves or Curves(()), **summary.baselines}.items():
        series[curve_key(name)] = curves.whole
        series |= {curve_key(name, region): values for region, values in curves.regions.items()}
    return series


class MlflowTrialLogger(Callback):
    """Sends a run's per-epoch metrics to its trial's MLflow run, and at the end its curves and files,
    under `prefix` (one seed of several: `names.seed_prefix`). With `checkpoint_every` k > 0, the epoch's
    checkpoint goes to the run after every k-th epoch too: a retry on a worker that shares no disk
    with this one resumes from it."""

    def __init__(self, tracker: StudyTracker, run_id: str, run_dir: Path, prefix: str = "",
                 checkpoint_every: int = 0):
        self.tracker = tracker
        self.run_id = run_id
        self.run_dir = run_dir
        self.prefix = prefix
        self.checkpoint_every = checkpoint_every
        self.checkpoint_dir: Path | None = None
        self.upload_seconds = 0.0       # spent uploading checkpoints after epochs

    def _log(self, values: dict[str, float], step: int = 0) -> None:
        self.tracker.log_metrics(self.run_id, {self.prefix + key: value for key, value in values.items()}, step)

    def on_train_start(self, start: RunStart) -> None:
        self.checkpoint_dir = start.checkpoint_dir
        if start.baselines:
            self._log(baseline_metrics(dict(start.baselines)))
        for record in start.records:     # a resumed trial: the restored epochs, so its curves are whole
            self._log(epoch_metrics(record), step=record.epoch)

    def on_epoch_end(self, record: EpochRecord) -> None:
        self._log(epoch_metrics(record), step=record.epoch)
        checkpoint = self.checkpoint_dir / LAST_CHECKPOINT if self.checkpoint_dir else None
        if (self.checkpoint_every and (record.epoch + 1) % self.checkpoint_every == 0
                and checkpoint is not None and checkpoint.is_file()):
            started = time.perf_counter()
            self.tracker.upload_checkpoint(self.run_id, checkpoint, self.prefix)
            self.upload_seconds += time.perf_counter() - started

    def on_train_end(self, summary: RunSummary) -> None:
        # RunOutputs runs before this callback, so the folder already holds the final files.
        self._log(final_metrics(summary))
        for key, values in curve_series(summary).items():
            self.tracker.log_series(self.run_id, self.prefix + key, values)
        self.tracker.log_files(self.run_id, self.run_dir, self.prefix)
