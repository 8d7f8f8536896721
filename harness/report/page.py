"""`harness report --html`: a study's analysis as a self-contained folder (index.html, its PNGs and
GIF, and the data behind every figure as CSV), also logged to the study's MLflow parent run.

Curves come from the trials' MLflow runs, so the report reads the same from local stores and
from a tracking server; states, params and values come from the Optuna study.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Callable

import optuna
import pandas as pd
from optuna.trial import FrozenTrial


from .curves import trial_curves
from .confirmation import Confirmation
from .sections import (answer_section, confirmation_section, curves_section, history_section, per_frame_section,
                       rollout_section, schedules_section, table_section)
from harness.store.trials import best_trial
from .tables import ANNEAL, best_per_anneal, trials_table
from harness.store.tracking import StudyTracker


def write_html_report(study: optuna.Study, confirmation: Confirmation | None, tracker: StudyTracker, out_dir: Path,
                      progress: Callable[[str], None] = lambda line: None) -> Path:
    """Write the report folder and log it to the study's parent run; returns index.html.
    `progress` hears one line per stage (reading MLflow and drawing figures take a while)."""
    trials = study.get_trials(deepcopy=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress(f"report: reading the curves of {len(trials)} trial(s) from MLflow")
    curves = [c for c in (trial_curves(tracker, t) for t in trials) if c is not None]
    table = trials_table(study)
    kind_of = {c.trial.number: c.anneal for c in curves}
    if ANNEAL not in table:    # fixed by the spec rather than searched: from the runs' params
        table.insert(2, ANNEAL, table["trial"].map(kind_of))
    table = table.sort_values("final_psnr", ascending=False, na_position="last")
    table.to_csv(out_dir / "trials.csv", index=False)

    by_number = {c.trial.number: c for c in curves}
    best_by_anneal = {kind: by_number[t.number] for kind, t in best_per_anneal(trials, kind_of).items()}
    builders = [("the confirmed ranking", lambda: confirmation_section(confirmation, out_dir)),
                ("the search's answer", lambda: answer_section(study, curves, best_by_anneal, out_dir)),
                ("schedules", lambda: schedules_section(curves, trials, out_dir)),
                ("curves", lambda: curves_section(curves, best_by_anneal, out_dir)),
                ("PSNR per frame", lambda: per_frame_section(best_by_anneal, out_dir)),
                ("history", lambda: history_section(study, trials, out_dir)),
                ("trial table", lambda: table_section(table)),
                ("rollout", lambda: rollout_section(tracker, best_trial(trials), out_dir))]
    sections = []
    for number, (name, build) in enumerate(builders, start=1):
        progress(f"report: section {number}/{len(builders)}, {name}")
        sections.append(build())
    index = out_dir / "index.html"
    index.write_text(_page(study, trials, sections))
    progress("report: logging the folder to the study's MLflow parent run")
    tracker.client.log_artifacts(tracker.parent_run_id, str(out_dir), "report")
    return index


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
