"""Figures of a study report: one trial's schedules against its losses, curves of all trials by
KL-annealing type, PSNR per frame of each type's best trial, the optimisation history and the
parameter importances. Object-oriented matplotlib on the Agg canvas, like harness.plots."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from models.schedules import KL_SCHEDULES

from harness.outputs.plots import new_figure, save_figure

# One colour per registered KL schedule, in registry order (a new schedule gets the next one), the same
# in every figure of a report; OTHER_COLOR, kept out of the palette, for a type the registry lacks.
ANNEAL_PALETTE = ("tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:pink", "tab:olive", "tab:cyan")
ANNEAL_COLORS = dict(zip(KL_SCHEDULES, ANNEAL_PALETTE))
OTHER_COLOR = "tab:purple"
STATE_MARKERS = {"PRUNED": "x", "FAIL": "X", "RUNNING": ">"}
BASELINE_STYLES = ("--", ":")


def anneal_color(anneal: str) -> str:
    return ANNEAL_COLORS.get(anneal, OTHER_COLOR)


def plot_schedules_against_losses(history: pd.DataFrame, path: Path, title: str) -> Path:
    """Training loss and validation rollout MSE (log axis, left) with teacher-forcing ratio and
    KL beta (right, 0..1) per epoch: how the schedules move the losses."""
    figure = new_figure(height_in=4.8)
    ax = figure.subplots()
    epochs = history["epoch"].to_numpy() + 1   # shown from 1
    ax.plot(epochs, history["loss"], "-o", color="tab:red", ms=3, label="training loss")
    if history["val_mse"].notna().any():
        ax.plot(epochs, history["val_mse"], "-s", color="tab:brown", ms=3, label="validation loss (rollout MSE)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (log scale)")
    ax.grid(True, alpha=0.3)
    right = ax.twinx()
    right.plot(epochs, history["tfr"], "--", color="tab:blue", label="teacher-forcing ratio")
    right.plot(epochs, history["beta"], ":", color="tab:green", lw=2, label="KL beta")
    right.set_ylim(-0.03, 1.03)
    right.set_ylabel("ratio / beta")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="best", fontsize="small", framealpha=0.9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    return save_figure(figure, path)


def plot_curves_by_anneal(curves: pd.DataFrame, bold: set[int], path: Path) -> Path:
    """Training loss and validation PSNR per epoch of every trial, coloured by KL-annealing type;
    the best trial of each type bold, trials that stopped early end in a marker."""
    figure = new_figure(height_in=4.8)
    loss_ax, psnr_ax = figure.subplots(1, 2)
    for trial, rows in curves.groupby("trial", sort=True):
        anneal, state = rows["anneal"].iloc[0], rows["state"].iloc[0]
        strong = trial in bold
        style = {"color": anneal_color(anneal), "lw": 2.6 if strong else 1.0, "alpha": 1.0 if strong else 0.45,
                 "zorder": 3 if strong else 2}
        for ax, key in ((loss_ax, "loss"), (psnr_ax, "val_psnr")):
            ax.plot(rows["epoch"] + 1, rows[key], **style)
            if state in STATE_MARKERS:
                ax.plot(rows["epoch"].iloc[-1:] + 1, rows[key].iloc[-1:], STATE_MARKERS[state], ms=7, **style)
    loss_ax.set_yscale("log")
    loss_ax.set_title("Training loss")
    loss_ax.set_ylabel("loss (log scale)")
    psnr_ax.set_title("Validation PSNR (per-epoch rollout)")
    psnr_ax.set_ylabel("PSNR (dB)")
    for ax in (loss_ax, psnr_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    handles = [psnr_ax.plot([], [], color=anneal_color(a), lw=2, label=a)[0]
               for a in sorted(curves["anneal"].unique())]
    handles += [psnr_ax.plot([], [], STATE_MARKERS[s], color="black", label=s.lower())[0]
                for s in STATE_MARKERS if s in set(curves["state"])]
    psnr_ax.legend(handles=handles, loc="best", fontsize="small", title="KL annealing (bold: best)")
    return save_figure(figure, path)


def plot_psnr_per_frame_by_anneal(series: Mapping[str, tuple[int, Sequence[float]]],
                                  baselines: Mapping[str, Sequence[float]], path: Path,
                                  figure_panel: tuple[Mapping[str, tuple[int, Sequence[float]]],
                                                      Mapping[str, Sequence[float]]] | None = None) -> Path:
    """PSNR per frame of the validation rollout of the best trial of each annealing type, beside the
    baselines on the same rollout (black), from frame 1 (frame 0 is given to the model, its PSNR is
    capped and would flatten the rest): a model below "repeat first frame" has learned nothing to use.
    `figure_panel`, the same curves over the figure's pixels only, adds a second panel (masked data)."""
    figure = new_figure(height_in=4.2 if figure_panel is None else 7.6)
    panels = [("whole frame", series, baselines)]
    if figure_panel is not None:
        panels.append(("figure only (the dancer's pixels)", *figure_panel))
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (where, curves, references) in zip(axes, panels):
        for anneal, (trial, values) in sorted(curves.items()):
            values = np.asarray(values, dtype=float)
            ax.plot(np.arange(1, len(values) + 1), values, color=anneal_color(anneal), lw=1.4,
                    label=f"{anneal} (trial {trial}, mean {np.nanmean(values):.2f} dB)")
        for (name, values), style in zip(references.items(), BASELINE_STYLES):
            values = np.asarray(values, dtype=float)
            ax.plot(np.arange(1, len(values) + 1), values, color="black", lw=1.1, ls=style,
                    label=f"baseline: {name} (mean {np.nanmean(values):.2f} dB)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"PSNR per frame, {where}: best trial of each KL-annealing type and the baselines")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("frame of the validation rollout")
    return save_figure(figure, path)


def plot_optimization_history(numbers: Sequence[int], values: Sequence[float], path: Path) -> Path:
    """Each completed trial's objective and the best so far, in trial order."""
    figure = new_figure(height_in=4.0)
    ax = figure.subplots()
    ax.plot(numbers, values, "o", color="tab:blue", ms=5, label="completed trial")
    ax.step(numbers, np.maximum.accumulate(np.asarray(values, dtype=float)), where="post", color="tab:red",
            label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("final validation PSNR (dB)")
    ax.set_title("Optimisation history")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return save_figure(figure, path)


def plot_param_importances(importances: Mapping[str, float], path: Path) -> Path:
    """Share of the objective's variation each searched parameter explains (Optuna's PED-ANOVA)."""
    names = sorted(importances, key=importances.get)
    figure = new_figure(height_in=max(2.0, 0.5 * len(names) + 1.2))
    ax = figure.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for y, name in enumerate(names):
        ax.text(importances[name], y, f" {importances[name]:.2f}", va="center", fontsize="small")
    ax.set_xlim(0, max(1.0, max(importances.values()) * 1.15))
    ax.set_xlabel("importance (share)")
    ax.set_title("Parameter importances")
    return save_figure(figure, path)


def plot_confirmed_ranking(names: Sequence[str], means: Sequence[float], half_widths: Sequence[float],
                           search: Sequence[float], stopped: Sequence[bool], path: Path) -> Path:
    """Each candidate's mean over its fresh seeds with its 95% interval (the leader on top), beside its
    score in the search (open circle): how much picking it from many noisy trials overstated it."""
    figure = new_figure(height_in=max(2.4, 0.55 * len(names) + 1.4))
    ax = figure.subplots()
    rows = np.arange(len(names))[::-1]
    widths = np.nan_to_num(np.asarray(half_widths, dtype=float))
    for y, mean, width, was_stopped in zip(rows, means, widths, stopped):
        color = "tab:gray" if was_stopped else "tab:blue"
        ax.errorbar([mean], [y], xerr=[[width], [width]], fmt="o", color=color, capsize=4, ms=6)
    ax.plot(search, rows, "o", mfc="none", color="tab:red", ms=7, label="its score in the search")
    ax.plot([], [], "o", color="tab:blue", label="confirmed: mean over fresh seeds, 95% interval")
    if any(stopped):
        ax.plot([], [], "o", color="tab:gray", label="stopped by racing")
    ax.axvline(means[0], color="tab:blue", lw=0.8, ls=":")
    ax.set_yticks(rows, names)
    ax.set_xlabel("final validation PSNR (dB)")
    ax.set_title("Confirmed ranking on fresh seeds, beside the search's scores")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return save_figure(figure, path)
