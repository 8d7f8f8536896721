"""The HTML study report's sections: each writes its figure and CSV into the report folder and returns its HTML."""
from __future__ import annotations

import html
import math
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from . import figures
from .confirmation import UNCONFIRMED, Confirmation
from .curves import CURVE_KEYS, TrialCurves
from harness.outputs.names import CONFIRMED_CSV, ROLLOUT_GIF
from harness.store.trials import best_trial
from .tables import ANNEAL, anneal_table
from harness.outputs.names import seed_prefix
from harness.store.tracking import StudyTracker

CONFIRMED_PNG = "confirmed_ranking.png"
SCHEDULES_PNG = "best_trial_schedules.png"
CURVES_PNG = "curves_by_anneal.png"
PER_FRAME_PNG = "psnr_per_frame_by_anneal.png"
HISTORY_PNG = "optimization_history.png"
IMPORTANCES_PNG = "param_importances.png"
BEST_GIF = "best_rollout.gif"


def confirmation_section(confirmation: Confirmation | None, out_dir: Path) -> str:
    """The answer first: the confirmed ranking with intervals, gaps to the leader and the chance of beating
    it, each candidate's search score beside it; or that the ranking is unconfirmed."""
    if confirmation is None or not confirmation.ranking:
        return _section("The answer", f"<p>The ranking is {html.escape(UNCONFIRMED)}.</p>")
    table = confirmation.table()
    table.to_csv(out_dir / CONFIRMED_CSV, index=False)
    figures.plot_confirmed_ranking([f"{r['candidate']}: trial {r['search_trial']}" for _, r in table.iterrows()],
                                   table["confirmed_psnr"].tolist(), table["ci95"].tolist(),
                                   table["search_psnr"].tolist(), [bool(s) for s in table["stopped"]],
                                   out_dir / CONFIRMED_PNG)
    leader = table.iloc[0]
    close = table[(table["vs_leader"] == "within noise")]
    notes = [f"Leader: trial {leader['search_trial']} ({leader['params']}), {leader['confirmed_psnr']:.2f} "
             f"± {leader['ci95']:.2f} dB over {leader['seeds']} fresh seeds; in the search it scored "
             f"{leader['search_psnr']:.2f} dB."]
    if len(close):
        notes.append("Within noise of the leader: " + ", ".join(f"trial {r['search_trial']}" for _, r in
                                                                 close.iterrows())
                     + ": the data do not tell them apart.")
    return _section("The answer: confirmed on fresh seeds", f"<p>{html.escape(confirmation.summary())}. Each "
                    "candidate re-trained on seeds the search never used, the same seeds for all, so gaps are "
                    "paired by seed (95% Student-t intervals); <em>P(beats leader)</em>: the share of paired "
                    "bootstrap resamples over seeds in which it beats the leader; <em>optimism</em>: its search "
                    "score minus its confirmed mean.</p>"
                    + "".join(f"<p>{html.escape(note)}</p>" for note in notes)
                    + _figure(CONFIRMED_PNG, CONFIRMED_CSV) + _html_table(table, "confirmed"))


def schedules_section(curves: list[TrialCurves], trials: list[FrozenTrial], out_dir: Path) -> str:
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


def curves_section(curves: list[TrialCurves], best_by_anneal: dict[str, TrialCurves], out_dir: Path) -> str:
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


def per_frame_section(best_by_anneal: dict[str, TrialCurves], out_dir: Path) -> str:
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


def history_section(study: optuna.Study, trials: list[FrozenTrial], out_dir: Path) -> str:
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
            # Optuna's caveats (e.g. a value tried by one trial only) belong on the page, not on stderr.
            with warnings.catch_warnings(record=True) as caveats:
                warnings.simplefilter("always", UserWarning)
                importances = optuna.importance.get_param_importances(study)
            reason = "no searched parameter varied across the completed trials"
        except (RuntimeError, ValueError) as err:
            reason = str(err)
    if importances:
        pd.DataFrame({"param": list(importances), "importance": list(importances.values())}
                     ).to_csv(out_dir / "param_importances.csv", index=False)
        figures.plot_param_importances(importances, out_dir / IMPORTANCES_PNG)
        body += _figure(IMPORTANCES_PNG, "param_importances.csv")
        body += "".join(f"<p>Optuna: {html.escape(str(caveat.message))}</p>" for caveat in caveats)
    else:
        body += f"<p>Parameter importances: not available ({html.escape(reason)}).</p>"
    return _section("Optimisation", body)


def answer_section(study: optuna.Study, curves: list[TrialCurves], best_by_anneal: dict[str, TrialCurves],
                    out_dir: Path) -> str:
    """The study's answer: the best trial of each KL-annealing type with its interval over seeds, its
    gain over the reference and over the best other type, each marked when it lies within noise; and
    whether the best model beats repeating the first frame at all."""
    table = anneal_table(study, {c.trial.number: c.anneal for c in curves})
    if table.empty:
        return _section("Which KL annealing", "<p>No completed trial yet.</p>")
    table.to_csv(out_dir / "best_by_anneal.csv", index=False)
    notes = []
    top = best_by_anneal.get(table[ANNEAL].iloc[0])
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
                    "with a 95% interval (Student t), and a 95% interval for its gain over the "
                    "reference trial and for its lead over the best other type (paired by seed where "
                    "both trained the same seeds, else Welch's); "
                    "<em>within noise</em>: the interval holds 0.</p>"
                    + "".join(f"<p>{html.escape(note)}</p>" for note in notes)
                    + _html_table(table, "best-by-anneal")
                    + '<p>data: <a href="best_by_anneal.csv">best_by_anneal.csv</a></p>')


def _html_table(table: pd.DataFrame, table_id: str, row_class: str | None = None, sortable: bool = False) -> str:
    """`table` as HTML; `row_class` names a column whose value classes each row (e.g. state-PRUNED)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for _, row in table.iterrows():
        cls = f' class="{row_class}-{html.escape(str(row[row_class]))}"' if row_class else ""
        rows.append(f"<tr{cls}>" + "".join(_cell(value) for value in row) + "</tr>")
    sort = ' class="sortable"' if sortable else ""
    return f'<table id="{table_id}"{sort}><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def table_section(table: pd.DataFrame) -> str:
    return _section("All trials", '<p>Click a column to sort; <a href="trials.csv">trials.csv</a>. '
                    "Pruned and failed trials are marked.</p>"
                    + _html_table(table, "trials", row_class="state", sortable=True))


def rollout_section(tracker: StudyTracker, best: FrozenTrial | None, out_dir: Path) -> str:
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
