"""Figures a researcher reads after a training run: loss curves, schedules, PSNR per frame.

Figures are built with matplotlib's object-oriented API on the Agg canvas, so
plotting never needs a display and never touches pyplot's global state (a
sweep draws many figures in one process).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

FIGURE_WIDTH_IN = 10.0
DPI = 110
MARKER_SIZE = 3.5
# Curves with at most this many points get markers on every point.
MARKERS_UP_TO_POINTS = 60
# One style per curve of a panel, so that equal curves (the baselines often are) stay visible.
LINE_STYLES = ("-", "--", ":", "-.")
DIVERGED_COLOR = "tab:red"


def plot_training_curves(history: Sequence[Mapping], path: Path | str, title: str = "") -> Path:
    """Loss panels (total loss, recon MSE and KL on log axes) and validation PSNR per epoch.

    Non-finite loss values (a diverged epoch) are marked with a red cross on the
    panel's lower edge; epochs without validation (NaN PSNR) are simply skipped.
    """
    epochs = _epochs(history)
    figure = new_figure(height_in=7.0)
    (loss_ax, recon_ax), (kl_ax, psnr_ax) = figure.subplots(2, 2, sharex=True)

    loss = _column(history, "loss")
    # The total loss can fall by decades while beta is still near 0; a log axis keeps its tail readable.
    _plot_epoch_metric(loss_ax, epochs, loss, "total loss", "tab:blue", log=_spans_decades(loss))
    loss_ax.set_ylabel("loss (per batch)")
    loss_ax.set_title("Total training loss")

    _plot_epoch_metric(recon_ax, epochs, _column(history, "recon"), "reconstruction MSE", "tab:orange", log=True)
    recon_ax.set_ylabel("MSE (pixels in [0, 1])")
    recon_ax.set_title("Reconstruction term")

    _plot_epoch_metric(kl_ax, epochs, _column(history, "kl"), "KL", "tab:purple", log=True)
    kl_ax.set_ylabel("KL (nats, summed over latents)")
    kl_ax.set_title("KL term (before beta weighting)")

    psnr = _column(history, "val_psnr")
    _plot_epoch_metric(
        psnr_ax, epochs, psnr, "validation PSNR", "tab:green", mark_non_finite=False, empty_text="no validation yet"
    )
    _mark_best(psnr_ax, epochs, psnr)
    psnr_ax.set_ylabel("PSNR (dB)")
    psnr_ax.set_title("Validation PSNR (mean over predicted frames)")

    for ax in (loss_ax, recon_ax, kl_ax, psnr_ax):
        _style_epoch_axis(ax, epochs)
    for ax in (kl_ax, psnr_ax):
        ax.set_xlabel("epoch")
    figure.suptitle(title or "Training curves")
    return save_figure(figure, path)


def plot_schedules(history: Sequence[Mapping], path: Path | str, title: str = "") -> Path:
    """KL beta and teacher-forcing ratio per epoch, in two panels (their curves often coincide at 1).

    Each value holds for a whole epoch, so it is drawn as a step from the epoch's
    start (marker) to the next epoch.
    """
    epochs = _epochs(history)
    figure = new_figure(height_in=5.0)
    beta_ax, tfr_ax = figure.subplots(2, 1, sharex=True)
    panels = (
        (beta_ax, "beta", "KL weight β", "tab:purple", "KL annealing β"),
        (tfr_ax, "tfr", "teacher-forcing ratio", "tab:blue", "Teacher-forcing ratio"),
    )
    for ax, key, ylabel, color, panel_title in panels:
        values = _column(history, key)
        # Extend the last value to the end of its epoch so the final step has a visible width.
        step_x = np.append(epochs, epochs[-1] + 1)
        step_y = np.append(values, values[-1])
        ax.step(step_x, step_y, where="post", color=color, linewidth=1.8)
        ax.plot(epochs, values, "o", color=color, markersize=MARKER_SIZE)
        finite = values[np.isfinite(values)]
        top = max(1.0, float(finite.max())) if finite.size else 1.0
        ax.set_ylim(-0.05, top + 0.05)
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title)
        _style_epoch_axis(ax, epochs, right_edge=epochs[-1] + 1)
    tfr_ax.set_xlabel("epoch")
    figure.suptitle(title or "Training schedules")
    return save_figure(figure, path)


def plot_psnr_per_frame(
    psnr: Mapping[str, np.ndarray] | np.ndarray,
    path: Path | str,
    title: str = "",
    figure_psnr: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """PSNR (dB) against frame index of a rollout, one curve per entry of a dict (or one for an array).

    Frame 0 is the given frame (its PSNR may be inf), so curves start at frame 1
    and each legend entry shows the curve's mean over frames 1..T-1. With
    `figure_psnr` (the same curves over the figure's pixels only) a second
    panel below draws those; their frames without a value (NaN: the figure is
    out of frame) are gaps, left out of the means.
    """
    curves = psnr if isinstance(psnr, Mapping) else {"model": psnr}
    figure = new_figure(height_in=4.5 if figure_psnr is None else 8.0)
    if figure_psnr is None:
        axes = [(figure.subplots(), curves, title or "PSNR per frame of the rollout")]
    else:
        whole_ax, figure_ax = figure.subplots(2, 1, sharex=True)
        axes = [(whole_ax, curves, "Whole frame"), (figure_ax, figure_psnr, "Figure only (pixels of the dancer)")]
        figure.suptitle(title or "PSNR per frame of the rollout")
    for ax, panel_curves, panel_title in axes:
        _draw_psnr_curves(ax, panel_curves)
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(panel_title)
    axes[-1][0].set_xlabel("frame index (frame 0 is the given frame, not plotted)")
    return save_figure(figure, path)


def _draw_psnr_curves(ax: Axes, curves: Mapping[str, np.ndarray]) -> None:
    """One line per curve from frame 1 on, its mean over the frames with a value in the legend. Each
    curve has its own line style, and a curve equal to an earlier one says so in the legend (the
    untrained residual model is exactly "repeat first frame"), so that none hides another unseen."""
    longest = 0
    drawn: dict[str, np.ndarray] = {}
    for index, (name, values) in enumerate(curves.items()):
        values = np.asarray(values, dtype=float)
        if values.ndim != 1:
            raise ValueError(f"PSNR curve {name!r} must be 1-D over frames, got shape {values.shape}")
        predicted = values[1:]
        longest = max(longest, values.size)
        frames = np.arange(1, values.size)
        valued = predicted[~np.isnan(predicted)]
        mean_text = f"mean {valued.mean():.2f} dB" if valued.size else "no predicted frames"
        same = next((other for other, seen in drawn.items() if np.array_equal(seen, predicted, equal_nan=True)), None)
        label = f"{name} ({mean_text}{f', the same as {same}' if same else ''})"
        marker = "o" if predicted.size <= MARKERS_UP_TO_POINTS else None
        shown = np.where(np.isfinite(predicted), predicted, np.nan)
        ax.plot(frames, shown, marker=marker, markersize=MARKER_SIZE, linewidth=1.2,
                linestyle=LINE_STYLES[index % len(LINE_STYLES)], label=label)
        drawn[name] = predicted
    ax.set_xlim(0.5, max(longest - 1, 1) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def new_figure(height_in: float) -> Figure:
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def _epochs(history: Sequence[Mapping]) -> np.ndarray:
    if not history:
        raise ValueError("history is empty: nothing to plot")
    return np.array([row.get("epoch", index) for index, row in enumerate(history)], dtype=float) + 1   # shown from 1


def _column(history: Sequence[Mapping], key: str) -> np.ndarray:
    """One metric over epochs as floats; a missing key reads as NaN."""
    return np.array([row.get(key, np.nan) for row in history], dtype=float)


def _spans_decades(values: np.ndarray, decades: float = 2.0) -> bool:
    positive = values[np.isfinite(values) & (values > 0)]
    return positive.size > 1 and bool(np.log10(positive.max() / positive.min()) > decades)


def _plot_epoch_metric(
    ax: Axes,
    epochs: np.ndarray,
    values: np.ndarray,
    label: str,
    color: str,
    log: bool = False,
    mark_non_finite: bool = True,
    empty_text: str | None = None,
) -> None:
    """Draw the finite points as a line with markers; flag non-finite epochs on the lower edge."""
    shown = np.isfinite(values) & ((values > 0) if log else True)
    if shown.any():
        ax.plot(epochs[shown], values[shown], "-o", color=color, markersize=MARKER_SIZE, linewidth=1.5, label=label)
        if log:
            ax.set_yscale("log")
    else:
        empty_text = empty_text or ("no positive finite values" if log else "no finite values")
        ax.text(0.5, 0.5, empty_text, transform=ax.transAxes, ha="center", va="center", color="gray")
    non_finite = ~np.isfinite(values)
    if mark_non_finite and non_finite.any():
        # x in data units, y in axes units: the cross sits on the panel's bottom edge whatever the y scale.
        ax.plot(
            epochs[non_finite],
            np.full(non_finite.sum(), 0.03),
            "x",
            color=DIVERGED_COLOR,
            markersize=8,
            markeredgewidth=2,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label="non-finite (diverged)",
        )
    if ax.lines:
        ax.legend(loc="best", fontsize="small")


def _mark_best(ax: Axes, epochs: np.ndarray, psnr: np.ndarray) -> None:
    finite = np.isfinite(psnr)
    if not finite.any():
        return
    best = int(np.argmax(np.where(finite, psnr, -np.inf)))
    ax.plot(
        epochs[best],
        psnr[best],
        "*",
        color="gold",
        markeredgecolor="black",
        markersize=13,
        label=f"best {psnr[best]:.2f} dB (epoch {int(epochs[best])})",
    )
    ax.legend(loc="best", fontsize="small")


def _style_epoch_axis(ax: Axes, epochs: np.ndarray, right_edge: float | None = None) -> None:
    right = epochs.max() if right_edge is None else right_edge
    padding = max(0.5, 0.02 * (right - epochs.min()))
    ax.set_xlim(epochs.min() - padding, right + padding)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="y", alpha=0.1)
