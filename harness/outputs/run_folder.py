"""The files a training run leaves in its folder (named in `names`): config, metrics, plots, rollout GIF.

Written at every epoch's end (so an interrupted run still has them) by the `RunOutputs` callback from
the records the trainer publishes; `harness train` and sweep trials share it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from models.records import REGIONS, Callback, Curves, EpochRecord, RunStart, RunSummary

from .files import json_safe, write_config
from .gif import write_rollout_gif
from .names import (CONFIG_FILE, LOSS_PNG, METRICS_CSV, METRICS_JSON, MODEL, PSNR_CSV, PSNR_PNG, ROLLOUT_GIF,
                    SCHEDULES_PNG, final_metric, psnr_column)
from .plots import plot_psnr_per_frame, plot_schedules, plot_training_curves


def psnr_table(curves: Curves, baselines: dict[str, Curves]) -> pd.DataFrame:
    """Every PSNR-per-frame curve of a run as a column of PSNR_CSV: the model's and each baseline's whole
    frame, each followed by its region curves where the data has masks ("model figure", ...)."""
    columns: dict[str, tuple[float, ...]] = {}
    for name, named in {MODEL: curves, **baselines}.items():
        columns[psnr_column(name)] = named.whole
        columns |= {psnr_column(name, region): values for region, values in named.regions.items()}
    length = max(len(values) for values in columns.values())
    table = pd.DataFrame({"frame": np.arange(length)})
    for name, values in columns.items():
        if values:
            table[name] = pd.Series(values)
    return table


def whole_and_figure(curves: Curves, baselines: dict[str, Curves]) -> tuple[dict, dict | None]:
    """The curves a PSNR-per-frame plot draws: the model's and the baselines' whole-frame ones, and over
    the figure where the data has masks (None without)."""
    whole = {MODEL: np.asarray(curves.whole), **{name: np.asarray(c.whole) for name, c in baselines.items()}}
    if "figure" not in curves.regions:
        return whole, None
    figure = {MODEL: np.asarray(curves.regions["figure"]),
              **{name: np.asarray(c.regions["figure"]) for name, c in baselines.items() if "figure" in c.regions}}
    return whole, figure


class RunOutputs(Callback):
    """Keeps `run_dir` up to date with the run's metrics and pictures."""

    def __init__(self, run_dir: str | Path, data_root: str | Path, plots_every_epoch: bool = True):
        self.run_dir = Path(run_dir)
        self.data_root = str(data_root)
        # Sweeps draw their plots once at the end: a few hundred ms per epoch add up over many trials.
        self.plots_every_epoch = plots_every_epoch
        self.start: RunStart | None = None
        self.records: list[EpochRecord] = []
        self.curves: Curves | None = None

    def on_train_start(self, start: RunStart) -> None:
        self.start = start
        self.records = list(start.records)
        self.curves = start.records[-1].curves if start.records else None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(start.config.to_dict(), self.run_dir / CONFIG_FILE)

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.records.append(record)
        self.curves = record.curves
        self.write_tables(status="running", message=f"epoch {record.epoch + 1} done")
        if self.plots_every_epoch:
            self.write_plots(f"after epoch {record.epoch + 1}")

    def on_train_end(self, summary: RunSummary) -> None:
        self.records, self.curves = list(summary.records), summary.curves
        self.write_tables(status=summary.status, message=summary.message, summary=summary)
        if self.records:
            self.write_plots("final rollout" if summary.completed else f"after epoch {summary.epochs_run}")
        if summary.rollout is not None:
            write_rollout_gif(self.run_dir / ROLLOUT_GIF, prediction=summary.rollout.prediction,
                              truth=summary.rollout.truth, pose=summary.rollout.poses)

    def write_tables(self, status: str, message: str, summary: RunSummary | None = None) -> None:
        start = self.start
        pd.DataFrame([r.row() for r in self.records]).to_csv(self.run_dir / METRICS_CSV, index=False)
        if self.curves is not None:
            psnr_table(self.curves, start.baselines).to_csv(self.run_dir / PSNR_CSV, index=False)
        metrics = {
            "status": status,
            "message": message,
            "epochs_run": len(self.records),
            "epochs": start.config.epochs,
            "val_psnr": self.records[-1].val_psnr if self.records else math.nan,
            "best_val_psnr": max((r.val_psnr for r in self.records), default=-math.inf),
            "final_val_psnr": summary.final() if summary else math.nan,
            **self._region_summary(summary),
            "val_frames": {"per_epoch": start.epoch_val_len, "final": start.config.val_vi_len},
            "baselines": {name: curves.mean() for name, curves in start.baselines.items()},
            "data": self.data_root,
            "device": start.device,
            "history": [r.row() for r in self.records],
        }
        (self.run_dir / METRICS_JSON).write_text(json.dumps(json_safe(metrics), indent=2))

    def _region_summary(self, summary: RunSummary | None) -> dict:
        """The figure/background entries of METRICS_JSON: the final rollout's means (once the run has a
        summary) and the baselines' means; none when the data has no masks."""
        if not self.start.masks:
            return {}
        entries = {final_metric(region): summary.final(region) if summary else math.nan for region in REGIONS}
        for region in REGIONS:
            entries[f"baselines_{region}"] = {name: curves.mean(region) for name, curves in self.start.baselines.items()}
        return entries

    def write_plots(self, when: str) -> None:
        rows = [r.row() for r in self.records]
        plot_training_curves(rows, self.run_dir / LOSS_PNG, title=f"Training: {self.run_dir.name}")
        plot_schedules(rows, self.run_dir / SCHEDULES_PNG, title="KL beta and teacher forcing")
        if self.curves is not None and self.curves.whole:
            whole, figure = whole_and_figure(self.curves, dict(self.start.baselines))
            plot_psnr_per_frame(whole, self.run_dir / PSNR_PNG, title=f"Validation PSNR per frame, {when}",
                                figure_psnr=figure)


def write_seed_plot(summaries: list[RunSummary], seeds: list[int], folder: Path) -> None:
    """A trial with several seeds: PSNR per frame of each seed, their mean and the baselines
    (the seeds' mean untrained model), as PSNR_CSV and PSNR_PNG in the trial's folder."""
    curves = {f"seed {seed}": np.asarray(s.curves.whole) for seed, s in zip(seeds, summaries)}
    curves["mean over seeds"] = np.mean(list(curves.values()), axis=0)
    for name in summaries[0].baselines:
        curves[name] = np.mean([s.baselines[name].whole for s in summaries], axis=0)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"frame": np.arange(len(curves["mean over seeds"])), **curves}).to_csv(folder / PSNR_CSV,
                                                                                         index=False)
    plot_psnr_per_frame(curves, folder / PSNR_PNG, title=f"Validation PSNR per frame, {len(seeds)} seeds")
