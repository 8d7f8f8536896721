"""The files a training run leaves in its folder (named in `run_files`): config, metrics, plots, rollout GIF.

Written at every epoch's end (so an interrupted run still has them) by the
`RunOutputs` callback; `harness train` and sweep trials share it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from models.metrics import REGIONS
from models.trainer import Callback, Trainer, TrainResult

from .gif import to_uint8_frames, write_rollout_gif
from .plots import plot_psnr_per_frame, plot_schedules, plot_training_curves
from .names import (CONFIG_FILE, LOSS_PNG, METRICS_CSV, METRICS_JSON, PSNR_CSV, PSNR_PNG, ROLLOUT_GIF,
                        SCHEDULES_PNG, json_safe, write_config)


def mean_psnr(per_frame: list[float], skip_nan: bool = False) -> float:
    """Mean over frames 1..T-1 (frame 0 is given); `skip_nan` leaves out frames without a value
    (a figure PSNR where the figure is out of frame)."""
    predicted = np.asarray(per_frame[1:], dtype=float)
    if skip_nan:
        predicted = predicted[~np.isnan(predicted)]
    return float(predicted.mean()) if predicted.size else math.nan


def psnr_curves(trainer: Trainer) -> dict[str, list[float]]:
    """Every PSNR-per-frame curve of the run, by the name of its column in PSNR_CSV: the model's and
    each baseline's whole-frame curve, each followed by its region curves where the data has masks
    ("model figure", "model background", "untrained model figure", ...)."""
    curves = {"model": trainer.val_psnr_per_frame}
    curves |= {f"model {region}": values for region, values in trainer.val_region_psnr_per_frame.items()}
    for name, values in trainer.baselines.items():
        curves[name] = values
        curves |= {f"{name} {region}": v for region, v in trainer.region_baselines.get(name, {}).items()}
    return curves


def figure_curves(trainer: Trainer) -> dict[str, list[float]]:
    """The model's and the baselines' PSNR per frame over the figure; empty without masks."""
    if "figure" not in trainer.val_region_psnr_per_frame:
        return {}
    return {"model": trainer.val_region_psnr_per_frame["figure"],
            **{name: regions["figure"] for name, regions in trainer.region_baselines.items()}}


def region_summary(trainer: Trainer, result: TrainResult | None) -> dict:
    """The figure/background entries of METRICS_JSON: the final rollout's means (once the run has a
    result) and the baselines' means; none when the data has no masks."""
    if trainer.validation.masks is None:
        return {}
    final = ({"figure": result.final_val_psnr_figure, "background": result.final_val_psnr_background}
             if result else {})
    summary = {f"final_val_psnr_{region}": final.get(region, math.nan) for region in REGIONS}
    for region in REGIONS:
        summary[f"baselines_{region}"] = {name: mean_psnr(by_region[region], skip_nan=True)
                                          for name, by_region in trainer.region_baselines.items()}
    return summary


class RunOutputs(Callback):
    """Keeps `run_dir` up to date with the run's metrics and pictures."""

    def __init__(self, run_dir: str | Path, data_root: str | Path, plots_every_epoch: bool = True):
        self.run_dir = Path(run_dir)
        self.data_root = str(data_root)
        # Sweeps draw their plots once at the end: a few hundred ms per epoch add up over many trials.
        self.plots_every_epoch = plots_every_epoch

    def on_train_start(self, trainer: Trainer) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(trainer.config.to_dict(), self.run_dir / CONFIG_FILE)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.write_tables(trainer, status="running", message=f"epoch {trainer.epoch} done")
        if self.plots_every_epoch:
            self.write_plots(trainer, f"after epoch {trainer.epoch}")

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        self.write_tables(trainer, status=result.status, message=result.message, result=result)
        if trainer.history:
            self.write_plots(trainer, "final rollout" if result.status == "completed"
                             else f"after epoch {trainer.epoch}")
        if trainer.last_rollout is not None:
            count = trainer.last_rollout.shape[0]
            write_rollout_gif(self.run_dir / ROLLOUT_GIF,
                              prediction=to_uint8_frames(trainer.last_rollout),
                              truth=to_uint8_frames(trainer.validation.images[0, :count]),
                              pose=to_uint8_frames(trainer.validation.poses[0, :count]))

    def psnr_table(self, trainer: Trainer) -> pd.DataFrame:
        curves = psnr_curves(trainer)
        length = max(len(values) for values in curves.values())
        table = pd.DataFrame({"frame": np.arange(length)})
        for name, values in curves.items():
            if values:
                table[name] = pd.Series(values)
        return table

    def write_tables(self, trainer: Trainer, status: str, message: str, result: TrainResult | None = None) -> None:
        pd.DataFrame(trainer.history).to_csv(self.run_dir / METRICS_CSV, index=False)
        if trainer.val_psnr_per_frame:
            self.psnr_table(trainer).to_csv(self.run_dir / PSNR_CSV, index=False)
        last = trainer.history[-1]["val_psnr"] if trainer.history else math.nan
        summary = {
            "status": status,
            "message": message,
            "epochs_run": trainer.epoch,
            "epochs": trainer.config.epochs,
            "val_psnr": last,
            "best_val_psnr": trainer.best_val_psnr,
            "final_val_psnr": result.final_val_psnr if result else math.nan,
            **region_summary(trainer, result),
            "val_frames": {"per_epoch": trainer.epoch_val_len, "final": trainer.config.val_vi_len},
            "baselines": {name: mean_psnr(v) for name, v in trainer.baselines.items()},
            "data": self.data_root,
            "device": str(trainer.device),
            "history": trainer.history,
        }
        (self.run_dir / METRICS_JSON).write_text(json.dumps(json_safe(summary), indent=2))

    def write_plots(self, trainer: Trainer, when: str) -> None:
        plot_training_curves(trainer.history, self.run_dir / LOSS_PNG, title=f"Training: {self.run_dir.name}")
        plot_schedules(trainer.history, self.run_dir / SCHEDULES_PNG, title="KL beta and teacher forcing")
        if trainer.val_psnr_per_frame:
            curves = {"model": np.asarray(trainer.val_psnr_per_frame),
                      **{name: np.asarray(v) for name, v in trainer.baselines.items()}}
            plot_psnr_per_frame(curves, self.run_dir / PSNR_PNG, title=f"Validation PSNR per frame, {when}",
                                figure_psnr=figure_curves(trainer) or None)


def write_seed_plot(trainers: list[Trainer], seeds: list[int], folder: Path) -> None:
    """A trial with several seeds: PSNR per frame of each seed, their mean and the baselines
    (the seeds' mean untrained model), as PSNR_CSV and PSNR_PNG in the trial's folder."""
    curves = {f"seed {seed}": np.asarray(t.val_psnr_per_frame) for seed, t in zip(seeds, trainers)}
    curves["mean over seeds"] = np.mean(list(curves.values()), axis=0)
    for name in trainers[0].baselines:
        curves[name] = np.mean([t.baselines[name] for t in trainers], axis=0)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"frame": np.arange(len(curves["mean over seeds"])), **curves}).to_csv(folder / PSNR_CSV,
                                                                                         index=False)
    plot_psnr_per_frame(curves, folder / PSNR_PNG, title=f"Validation PSNR per frame, {len(seeds)} seeds")
