"""The answer a study gives: its confirmed ranking (harness.ranking), read from its confirmation study,
or the plain statement that the search's ranking is unconfirmed."""
from __future__ import annotations

from dataclasses import dataclass

import optuna
import pandas as pd

from harness.outputs.names import confirm_study_name
from harness.ranking import Ranked, confirmed_ranking, ranking_rows
from harness.store.confirmation import Plan, standing
from harness.store.locations import Stores
from harness.store.optuna_storage import open_storage

UNCONFIRMED = ("unconfirmed: no confirmation ran, so the ranking is the search's, one score per configuration "
               "on its search seeds (the best of many noisy trials overstates itself); add a confirm section to "
               "the spec and run `harness confirm`")


@dataclass(frozen=True)
class Confirmation:
    plan: Plan
    ranking: list[Ranked]
    trainings_done: int
    trainings_racing_saved: int      # of every candidate on every seed, the ones racing did not need
    running: bool                    # trainings are queued or running, or the race goes on

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(ranking_rows(self.ranking))

    def summary(self) -> str:
        """One line: what was confirmed, on which seeds, and what racing saved."""
        seeds = self.plan.seeds
        state = "in progress" if self.running else "done"
        how = f"raced from {self.plan.min_seeds} seeds" if self.plan.racing else "every candidate on every seed"
        return (f"confirmed ranking ({state}): {len(self.plan.candidates)} candidate(s) on fresh seeds "
                f"{seeds[0]}..{seeds[-1]} ({how}); {self.trainings_done} training(s) done"
                + (f", {self.trainings_racing_saved} saved by racing" if self.plan.racing and not self.running else ""))


def read_confirmation(stores: Stores, study_name: str) -> Confirmation | None:
    """The study's confirmation, or None when none was made."""
    storage = open_storage(stores)
    name = confirm_study_name(study_name)
    if name not in optuna.get_all_study_names(storage):
        return None
    study = optuna.load_study(study_name=name, storage=storage)
    plan = Plan.of(study.user_attrs)
    now = standing(study, plan)
    done = sum(len(values) for values in now.values.values())
    everything = len(plan.candidates) * len(plan.seeds)
    racing = [c.id for c in plan.candidates if c.id not in now.stopped]
    unfinished = now.waiting or any(len(now.values[cid]) < len(plan.seeds) for cid in racing) or any(
        t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False))
    ranking = confirmed_ranking(plan.candidates, now.values, now.stopped)
    return Confirmation(plan, ranking, done, everything - done, bool(unfinished))
