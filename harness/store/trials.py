"""A study's trials as its storage holds them: loading a study by name, which trials count, their states,
the best, the reference, each trial's value per seed. No torch."""
from __future__ import annotations

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from models.errors import HarnessError

from .locations import Stores
from .optuna_storage import open_storage

# The states reports count trials in, in the order they show them.
STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)


class UnknownStudy(HarnessError):
    """No study of that name in the storage."""


def load_existing_study(stores: Stores, name: str) -> optuna.Study:
    """The study called `name`; a clear error listing the storage's studies when there is none."""
    storage = open_storage(stores)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise UnknownStudy(f"--study {name}: no such study in {stores.runs_dir if 'sqlite' in stores.storage_url else 'the storage'} "
                           f"(studies there: {known})")
    return optuna.load_study(study_name=name, storage=storage)


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    numbers: set[int] = set()
    for trial in trials:
        numbers.update(RetryHeartbeatStaleTrialCallback.retry_history(trial))
    return numbers


def counted_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that count toward the target: run or running, each retried trial once; a sampled
    repeat of an earlier point, which was not trained, does not count."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.state != TrialState.WAITING and t.number not in retried
            and "repeat_of" not in t.user_attrs]


def state_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = {state.name: 0 for state in STATES}
    for trial in trials:
        counts[trial.state.name] += 1
    return counts


def best_trial(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The completed trial with the highest value (the objective is maximised)."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return max(complete, key=lambda t: t.value) if complete else None


def seed_values(trial: FrozenTrial) -> list[float]:
    """A completed trial's value per seed (one value for a one-seed trial); empty otherwise."""
    if trial.state != TrialState.COMPLETE:
        return []
    return [float(v) for v in trial.user_attrs.get("seed_values") or [trial.value]]


def reference_trial(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The study's completed reference trial: its first enqueued one, the lab's defaults."""
    return next((t for t in trials if t.user_attrs.get("enqueued") == "reference"
                 and t.state == TrialState.COMPLETE), None)
