"""`harness report --html`: a study's analysis as a self-contained folder (index.html, its PNGs and
GIF, and the data behind every figure as CSV), also logged to the study's MLflow parent run.

Curves come from the trials' MLflow runs, so the report reads the same from local stores and
from a tracking server; states, params and values come from the Optuna study.
"""
from __future__ import annotations

import html
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from models.errors import HarnessError

from . import report_figures as figures
from .run_files import ROLLOUT_GIF
from .study_tables import anneal_table, trials_table
from .study import best_trial
from .tracking import TRIAL_TAG, StudyTracker, baseline_key, seed_prefix

# The baselines a trial scores on its validation rollout (models.trainer.Trainer.compute_baselines).
BASELINES = ("repeat first frame", "untrained model")

CURVE_KEYS = ("loss", "recon", "kl", "beta", "tfr", "val_psnr", "val_mse")
SCHEDULES_PNG = "best_trial_schedules.png"
CURVES_PNG = "curves_by_anneal.png"
PER_FRAME_PNG = "psnr_per_frame_by_anneal.png"
HISTORY_PNG = "optimization_history.png"
IMPORTANCES_PNG = "param_importances.png"
BEST_GIF = "best_rollout.gif"


class EmptyStudy(HarnessError):
    """A study without trials has nothing to report."""


@dataclass
class TrialCurves:
    trial: FrozenTrial
    anneal: str                 # KL-annealing type of the trial (from its run's params)
    history: pd.DataFrame       # one row per epoch, columns epoch + CURVE_KEYS
    per_frame: list[float]      # PSNR per frame of its last validation rollout, from frame 1
    baselines: dict[str, list[float]]   # the same for the baselines it scored (repeat frame 0, untrained)
    figure: dict[str, list[float]]      # PSNR per frame over the figure: "model" and each baseline (masked data)


def write_html_report(study: optuna.Study, tracker: StudyTracker, out_dir: Path,
                      progress: Callable[[str], None] = lambda line: None) -> Path:
    """Write the report folder and log it to the study's parent run; returns index.html.
    `progress` hears one line per stage (reading MLflow and drawing figures take a while)."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise EmptyStudy(f"--study {study.study_name}: the study has no trials yet; nothing to report")
    out_dir.mkdir(parents=True, exist_ok=True)
    progress(f"report: reading the curves of {len(trials)} trial(s) from MLflow")
    curves = [c for c in (_trial_curves(tracker, t) for t in trials) if c is not None]
    table = trials_table(study)
    if "kl_anneal_type" not in table:    # fixed by the spec rather than searched: from the runs' params
        table.insert(2, "kl_anneal_type", table["trial"].map({c.trial.number: c.anneal for c in curves}))
    table = table.sort_values("final_psnr", ascending=False, na_position="last")
    table.to_csv(out_dir / "trials.csv", index=False)

    best_by_anneal = _best_by_anneal(curves)
    builders = [("the answer", lambda: _answer_section(study, curves, best_by_anneal, out_dir)),
                ("schedules", lambda: _schedules_section(curves, trials, out_dir)),
                ("curves", lambda: _curves_section(curves, best_by_anneal, out_dir)),
                ("PSNR per frame", lambda: _per_frame_section(best_by_anneal, out_dir)),
                ("history", lambda: _history_section(study, trials, out_dir)),
                ("trial table", lambda: _table_section(table)),
                ("rollout", lambda: _rollout_section(tracker, best_trial(trials), out_dir))]
    sections = []
    for number, (name, build) in enumerate(builders, start=1):
        progress(f"report: section {number}/{len(builders)}, {name}")
        sections.append(build())
    index = out_dir / "index.html"
    index.write_text(_page(study, trials, sections))
    progress("report: logging the folder to the study's MLflow parent run")
    tracker.client.log_artifacts(tracker.parent_run_id, str(out_dir), "report")
    return index


# -- data ----------------------------------------------------------------------------------------
def _trial_curves(tracker: StudyTracker, trial: FrozenTrial) -> TrialCurves | None:
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id or trial.state == TrialState.WAITING:
        return None
    client = tracker.client
    run = client.get_run(run_id)
    if run.data.tags.get(TRIAL_TAG) != str(trial.number):    # a retry that has not started its own run
        return None
    columns = {key: {m.step: m.value for m in client.get_metric_history(run_id, key)} for key in CURVE_KEYS}
    epochs = sorted(set().union(*(values.keys() for values in columns.values())))
    history = pd.DataFrame({"epoch": epochs, **{key: [columns[key].get(e, math.nan) for e in epochs]
                                                  for key in CURVE_KEYS}})
    per_frame = _series(tracker, run_id, "val_psnr_per_frame")
    baselines = {name: values for name in BASELINES
                 if (values := _series(tracker, run_id, f"{baseline_key(name)}_per_frame"))}
    figure = {name: values for name in ("model", *BASELINES)
              if (values := _series(tracker, run_id, "val_psnr_figure_per_frame" if name == "model"
                                    else f"{baseline_key(name, 'figure')}_per_frame"))}
    return TrialCurves(trial, run.data.params.get("kl_anneal_type", "?"), history, per_frame, baselines, figure)


def _series(tracker: StudyTracker, run_id: str, key: str) -> list[float]:
    """A per-frame series of a run, frame 1 first (frame 0 is given and not logged); gaps are NaN."""
    by_frame = {m.step: m.value for m in tracker.client.get_metric_history(run_id, key)}
    return [by_frame.get(frame, math.nan) for frame in range(1, max(by_frame, default=0) + 1)]


def _best_by_anneal(curves: list[TrialCurves]) -> dict[str, TrialCurves]:
    best: dict[str, TrialCurves] = {}
    for c in curves:
        if c.trial.state == TrialState.COMPLETE and (c.anneal not in best or c.trial.value > best[c.anneal].trial.value):
            best[c.anneal] = c
    return best


# -- sections: each returns its HTML and writes its figure and CSV --------------------------------
def _schedules_section(curves: list[TrialCurves], trials: list[FrozenTrial], out_dir: Path) -> str:
    best = best_trial(trials)
    chosen = next((c for c in curves if best is not None and c.trial.number == best.number), None)
    if chosen is None:   # no completed trial: the one that reached the highest per-epoch PSNR
        ranked = [c for c in curves if not c.history.empty]
        chosen = max(ranked, key=lambda c: c.history["val_psnr"].max(), default=None)
    if chosen is None or chosen.history.empty:
        return _section("Schedules and losses", "<p>No trial has logged an epoch yet.</p>")
    chosen.history.to_csv(out_dir / "best_trial_epochs.csv", index=False)
    figures.plot_schedules_against_losses(chosen.history, out_dir / SCHEDULES_PNG,
                                          f"Trial {chosen.trial.number} ({chosen.anneal}): schedules and losses")
    which = "the best trial" if best is not None else "the trial with the highest per-epoch PSNR (none completed)"
    return _section("Schedules and losses", f"<p>Teacher-forcing ratio and KL beta per epoch of {which}, "
                    "beside its training loss and validation loss (the rollout's MSE).</p>"
                    + _figure(SCHEDULES_PNG, "best_trial_epochs.csv"))


def _curves_section(curves: list[TrialCurves], best_by_anneal: dict[str, TrialCurves], out_dir: Path) -> str:
    rows = [c.history.assign(trial=c.trial.number, anneal=c.anneal, state=c.trial.state.name)
            for c in curves if not c.history.empty]
    if not rows:
        return _section("Curves by KL annealing", "<p>No trial has logged an epoch yet.</p>")
    table = pd.concat(rows, ignore_index=True)[["trial", "anneal", "state", "epoch", *CURVE_KEYS]]
    table.to_csv(out_dir / "curves.csv", index=False)
    bold = {c.trial.number for c in best_by_anneal.values()}
    figures.plot_curves_by_anneal(table, bold, out_dir / CURVES_PNG)
    return _section("Curves by KL annealing", "<p>Every trial, coloured by KL-annealing type; the best "
                    "completed trial of each type in bold. Pruned and failed trials stop where they "
                    "stopped, with a marker.</p>" + _figure(CURVES_PNG, "curves.csv"))


def _per_frame_section(best_by_anneal: dict[str, TrialCurves], out_dir: Path) -> str:
    best = {anneal: c for anneal, c in best_by_anneal.items() if c.per_frame}
    if not best:
        return _section("PSNR per frame", "<p>No completed trial yet.</p>")
    # The baselines of the best trial overall (repeat frame 0 is the same for every trial of a study).
    top = max(best.values(), key=lambda c: c.trial.value)
    baselines = top.baselines
    rows = _curve_rows({a: (c.trial.number, c.per_frame) for a, c in best.items()}, baselines, "")
    figure_panel = None
    if all("model" in c.figure for c in best.values()):     # masked data: a figure-only panel as well
        figure_panel = ({a: (c.trial.number, c.figure["model"]) for a, c in best.items()},
                        {name: values for name, values in top.figure.items() if name != "model"})
        rows += _curve_rows(*figure_panel, ", figure")
    pd.DataFrame(rows).to_csv(out_dir / "psnr_per_frame.csv", index=False)
    figures.plot_psnr_per_frame_by_anneal({a: (c.trial.number, c.per_frame) for a, c in best.items()},
                                          baselines, out_dir / PER_FRAME_PNG, figure_panel)
    missing = "" if baselines else (" The trials scored no baselines (their spec sets <code>baselines: false</code>),"
                                    " so none are drawn.")
    return _section("PSNR per frame", "<p>The full validation rollout of the best trial of each "
                    f"KL-annealing type, beside the baselines of trial {top.trial.number} (dashed): repeating "
                    f"the first frame, and the untrained model.{missing}</p>"
                    + _figure(PER_FRAME_PNG, "psnr_per_frame.csv"))


def _curve_rows(models: dict[str, tuple[int, list[float]]], baselines: dict[str, list[float]],
                suffix: str) -> list[dict]:
    """CSV rows (curve, frame, psnr) of each type's best trial and of the baselines, from frame 1."""
    curves = {f"{anneal} (trial {number}){suffix}": values for anneal, (number, values) in sorted(models.items())}
    curves.update({f"baseline: {name}{suffix}": values for name, values in baselines.items()})
    return [{"curve": curve, "frame": frame, "psnr": value}
            for curve, values in curves.items() for frame, value in enumerate(values, start=1)]


def _history_section(study: optuna.Study, trials: list[FrozenTrial], out_dir: Path) -> str:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return _section("Optimisation", "<p>No completed trial yet.</p>")
    pd.DataFrame({"trial": [t.number for t in complete], "value": [t.value for t in complete]}
                 ).to_csv(out_dir / "optimization_history.csv", index=False)
    figures.plot_optimization_history([t.number for t in complete], [t.value for t in complete],
                                      out_dir / HISTORY_PNG)
    body = _figure(HISTORY_PNG, "optimization_history.csv")
    importances, reason = {}, f"{len(complete)} completed trial(s); it takes at least 2"
    if len(complete) >= 2:    # Optuna's PED-ANOVA gives every parameter an equal share below that
        try:
            importances = optuna.importance.get_param_importances(study)
            reason = "no searched parameter varied across the completed trials"
        except (RuntimeError, ValueError) as err:
            reason = str(err)
    if importances:
        pd.DataFrame({"param": list(importances), "importance": list(importances.values())}
                     ).to_csv(out_dir / "param_importances.csv", index=False)
        figures.plot_param_importances(importances, out_dir / IMPORTANCES_PNG)
        body += _figure(IMPORTANCES_PNG, "param_importances.csv")
    else:
        body += f"<p>Parameter importances: not available ({html.escape(reason)}).</p>"
    return _section("Optimisation", body)


def _answer_section(study: optuna.Study, curves: list[TrialCurves], best_by_anneal: dict[str, TrialCurves],
                    out_dir: Path) -> str:
    """The study's answer: the best trial of each KL-annealing type with its interval over seeds, its
    gain over the reference and over the best other type, each marked when it lies within noise; and
    whether the best model beats repeating the first frame at all."""
    table = anneal_table(study, {c.trial.number: c.anneal for c in curves})
    if table.empty:
        return _section("Which KL annealing", "<p>No completed trial yet.</p>")
    table.to_csv(out_dir / "best_by_anneal.csv", index=False)
    notes = []
    top = best_by_anneal.get(table["kl_anneal_type"].iloc[0])
    repeat = top.baselines.get("repeat first frame") if top else None
    if repeat:
        margin = top.trial.value - float(np.nanmean(repeat))
        notes.append(f"The best model (trial {top.trial.number}) scores {top.trial.value:.2f} dB, "
                     f"{abs(margin):.2f} dB {'above' if margin > 0 else 'below'} repeating the first frame "
                     f"({np.nanmean(repeat):.2f} dB)" + ("." if margin > 0 else
                                                           ": it has learned nothing a reader should use."))
    if (table["seeds"] < 2).any():
        notes.append("Trials with one seed have no interval: their differences cannot be told from noise.")
    return _section("Which KL annealing", "<p>The best completed trial of each type, its mean over seeds "
                    "with a 95% interval (Student t), and Welch's 95% interval for its gain over the "
                    "reference trial and for its lead over the best other type; "
                    "<em>within noise</em>: the interval holds 0.</p>"
                    + "".join(f"<p>{html.escape(note)}</p>" for note in notes)
                    + _html_table(table, "best-by-anneal")
                    + '<p>data: <a href="best_by_anneal.csv">best_by_anneal.csv</a></p>')


def _html_table(table: pd.DataFrame, table_id: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for _, row in table.iterrows())
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _table_section(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for _, row in table.iterrows():
        cells = "".join(_cell(value) for value in row)
        rows.append(f'<tr class="state-{html.escape(str(row["state"]))}">{cells}</tr>')
    return _section("All trials", '<p>Click a column to sort; <a href="trials.csv">trials.csv</a>. '
                    "Pruned and failed trials are marked.</p>"
                    f'<table id="trials" class="sortable"><thead><tr>{head}</tr></thead>'
                    f'<tbody>{"".join(rows)}</tbody></table>')


def _rollout_section(tracker: StudyTracker, best: FrozenTrial | None, out_dir: Path) -> str:
    run_id = best.user_attrs.get("mlflow_run_id") if best is not None else None
    if not run_id:
        return _section("Best trial's rollout", "<p>No completed trial yet.</p>")
    seeds = best.user_attrs.get("seeds") or []
    prefix = seed_prefix(best.user_attrs["best_seed"], len(seeds)) if len(seeds) > 1 else ""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(tracker.client.download_artifacts(run_id, prefix + ROLLOUT_GIF, tmp), out_dir / BEST_GIF)
    which = f", seed {best.user_attrs['best_seed']}, the best of its {len(seeds)}" if prefix else ""
    return _section(f"Best trial's rollout (trial {best.number}{which})",
                    "<p>Validation rollout: pose, prediction and ground truth side by side.</p>"
                    f'<img src="{BEST_GIF}" alt="rollout of trial {best.number}">')


# -- HTML ----------------------------------------------------------------------------------------
def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return '<td data-value="">&ndash;</td>'
        return f'<td data-value="{value!r}">{value:.4g}</td>'
    text = "" if value is None else str(value)
    return f'<td data-value="{html.escape(text)}">{html.escape(text)}</td>'


def _figure(png: str, csv: str) -> str:
    return f'<figure><img src="{png}" alt="{png}"><figcaption>data: <a href="{csv}">{csv}</a></figcaption></figure>'


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _page(study: optuna.Study, trials: list[FrozenTrial], sections: list[str]) -> str:
    counts = pd.Series([t.state.name for t in trials]).value_counts()
    summary = ", ".join(f"{n} {state.lower()}" for state, n in counts.items())
    best = best_trial(trials)
    spread = best.user_attrs.get("value_ci95") if best else None
    headline = (f"best: trial {best.number}, {best.value:.2f}" + (f" ± {spread:.2f}" if spread is not None else "")
                + " dB" if best else "no completed trial")
    title = html.escape(f"Study {study.study_name}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style></head>
<body><h1>{title}</h1>
<p>{len(trials)} trials ({html.escape(summary)}); {html.escape(headline)}.</p>
{"".join(sections)}
<script>{SORT_SCRIPT}</script>
</body></html>
"""


STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222; }
img { max-width: 100%; }
figure { margin: 0.5em 0 1.5em; }
figcaption { font-size: small; color: #555; }
table { border-collapse: collapse; font-size: small; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eee; cursor: pointer; position: sticky; top: 0; }
th[data-order]::after { content: attr(data-order); }
tr.state-PRUNED { background: #fff6dd; }
tr.state-FAIL { background: #fde3e3; }
tr.state-RUNNING, tr.state-WAITING { color: #777; }
"""

# Sorts the trials table by a clicked column: numbers as numbers, blanks last.
SORT_SCRIPT = """
(function () {
  const table = document.getElementById("trials");
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach(function (th, column) {
    th.addEventListener("click", function () {
      const descending = th.dataset.order !== " \\u25bc";
      headers.forEach(function (other) { delete other.dataset.order; });
      th.dataset.order = descending ? " \\u25bc" : " \\u25b2";
      const rows = Array.from(table.tBodies[0].rows);
      rows.sort(function (a, b) {
        const x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        const nx = Number(x), ny = Number(y);
        const order = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
        return descending ? -order : order;
      });
      rows.forEach(function (row) { table.tBodies[0].appendChild(row); });
    });
  });
  table.dataset.sortable = "ready";
})();
"""
