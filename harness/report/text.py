"""`harness report` as text and tables: the answer first (the confirmed ranking, or that there is none),
then every trial of the search, then the best trial of each KL-annealing type."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd

from harness.store.locations import Stores

from .confirmation import UNCONFIRMED, Confirmation, read_confirmation
from .tables import anneal_table, trials_table


@dataclass(frozen=True)
class StudyReport:
    trials: pd.DataFrame
    by_anneal: pd.DataFrame
    confirmation: Confirmation | None

    def text(self) -> str:
        def table(frame: pd.DataFrame) -> str:
            return frame.to_string(index=False, float_format=lambda v: f"{v:.4g}")

        with pd.option_context("display.width", 200, "display.max_columns", None):
            if self.confirmation is None:
                parts = [f"ranking {UNCONFIRMED}"]
            else:
                parts = [self.confirmation.summary() + " (95% intervals over the fresh seeds; gaps paired by seed; "
                         "P(beats leader): paired bootstrap over seeds; optimism: search score minus confirmed mean):",
                         table(self.confirmation.table())]
            parts += ["\nthe search's trials:", table(self.trials)]
            if not self.by_anneal.empty:
                parts += ["\nbest search trial of each KL-annealing type (95% intervals over seeds; "
                          "'within noise': the interval holds 0):", table(self.by_anneal)]
        return "\n".join(parts)

    def write_csv(self, path: Path) -> list[Path]:
        """The trials table at `path`, and the confirmed ranking beside it (STEM.confirmed.csv)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.trials.to_csv(path, index=False)
        written = [path]
        if self.confirmation is not None:
            ranking = path.with_name(f"{path.stem}.confirmed.csv")
            self.confirmation.table().to_csv(ranking, index=False)
            written.append(ranking)
        return written

    def write_markdown(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        head = "" if self.confirmation is None else (self.confirmation.table().to_markdown(index=False, floatfmt=".4g")
                                                     + "\n\n")
        path.write_text(head + self.trials.to_markdown(index=False, floatfmt=".4g") + "\n")
        return path


def study_report(study: optuna.Study, stores: Stores) -> StudyReport:
    return StudyReport(trials_table(study), anneal_table(study), read_confirmation(stores, study.study_name))
