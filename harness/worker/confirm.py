"""The confirmation after a search: its best configurations, the best of each group the question is
about (`per`, e.g. each KL type) and the reference, re-trained on fresh seeds the search never used,
raced (harness.ranking) so that seeds go where the ranking is in doubt.

Each training (a candidate on one seed) is a trial of the confirmation study (outputs.names:
confirm_study_name), queued with the candidate's params: any worker takes, trains, records and
resumes it as it would a search trial, packed or not. What to queue next is planned from the stored
results under the store's lock, so workers started side by side agree and queue nothing twice.
"""
from __future__ import annotations

from typing import Callable

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from harness.errors import UsageError
from harness.outputs.names import (CANDIDATE_ATTR, CONFIRM_SEED_ATTR, CONFIRM_STAGE, CONFIRMS_ATTR, STAGE_ATTR,
                                   STOPPED_PREFIX, confirm_study_name)
from harness.ranking import Candidate, RacePlan, plan_race
from harness.spec import StudySpec
from harness.store.confirmation import Plan, standing
from harness.store.locations import Stores, store_lock
from harness.store.trials import reference_trial

from .trial import ask


def pick_candidates(spec: StudySpec, trials: list[FrozenTrial]) -> list[Candidate]:
    """The search's `top` completed trials, the best of each value of `per`, and the reference, each once
    (a trial picked for several reasons keeps them all; trials with the same params count once)."""
    confirm = spec.confirm
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (-t.value, t.number))
    roles: dict[int, list[str]] = {}
    for rank, trial in enumerate(complete[:confirm.top], start=1):
        roles.setdefault(trial.number, []).append(f"top {rank}")
    if confirm.per is not None:
        best: dict[str, FrozenTrial] = {}
        for trial in complete:
            best.setdefault(str(_value_of(spec, trial, confirm.per)), trial)
        for value, trial in best.items():
            roles.setdefault(trial.number, []).append(f"best of {confirm.per}={value}")
    reference = reference_trial(trials)
    if reference is not None:
        roles.setdefault(reference.number, []).append("reference")
    by_number = {t.number: t for t in complete}
    picked: list[Candidate] = []
    seen_params: dict[str, Candidate] = {}
    for number in sorted(roles, key=lambda n: (-by_number[n].value, n)):
        trial = by_number[number]
        key = repr(sorted(trial.params.items()))
        if key in seen_params:          # the same configuration trained twice in the search
            continue
        candidate = Candidate(f"c{len(picked)}", number, dict(trial.params), tuple(roles[number]), trial.value)
        seen_params[key] = candidate
        picked.append(candidate)
    return picked


def _value_of(spec: StudySpec, trial: FrozenTrial, key: str) -> object:
    """A config key's value in a trial: searched, else fixed by the spec (None: the training default)."""
    return trial.params.get(key, spec.fixed.get(key))


def fresh_seeds(trials: list[FrozenTrial], count: int) -> list[int]:
    """`count` seeds that no search trial trained: the ones after the highest it used."""
    used = [s for t in trials for s in t.user_attrs.get("seeds") or []]
    start = max(used, default=-1) + 1
    return list(range(start, start + count))


def open_confirmation(spec: StudySpec, stores: Stores, storage: BaseStorage, search: optuna.Study,
                      echo: Callable[[str], None]) -> optuna.Study:
    """The spec's confirmation study in `storage`; made (its candidates picked from the finished search,
    its seeds chosen) on first use, under the store's lock."""
    name = confirm_study_name(spec.name)
    with store_lock(stores.storage_url):
        try:
            study = optuna.create_study(storage=storage, study_name=name, direction=spec.direction,
                                        pruner=optuna.pruners.NopPruner())
        except optuna.exceptions.DuplicatedStudyError:
            return optuna.load_study(study_name=name, storage=storage, pruner=optuna.pruners.NopPruner())
        trials = search.get_trials(deepcopy=False)
        candidates = pick_candidates(spec, trials)
        if not candidates:
            optuna.delete_study(study_name=name, storage=storage)
            raise UsageError(f"--study {spec.name}: the search has no completed trial to confirm")
        plan = Plan(candidates, fresh_seeds(trials, spec.confirm.seeds), spec.confirm.min_seeds, spec.confirm.racing)
        for key, value in (plan.attrs() | {"search_study": spec.name, "planned_from_trials": len(trials)}).items():
            study.set_user_attr(key, value)
    echo(f"confirmation of {spec.name}: {len(candidates)} candidate(s) on seeds {plan.seeds[0]}..{plan.seeds[-1]}"
         f" ({'racing from ' + str(plan.min_seeds) + ' seeds' if plan.racing else 'every seed'}): "
         + "; ".join(f"{c.id} = trial {c.trial} ({', '.join(c.roles)})" for c in candidates))
    return study


class ConfirmTrials:
    """A worker's source of confirmation trainings (worker.loop.TrialSource): before each claim it plans
    under the store's lock, records the candidates racing stopped and queues the next round's trainings."""

    def __init__(self, study: optuna.Study, stores: Stores, echo: Callable[[str], None]):
        self.study = study
        self.stores = stores
        self.echo = echo
        self.plan = Plan.of(study.user_attrs)
        self.race = RacePlan()

    def _advance(self) -> None:
        """Under the lock: what stands, the race's next step, recorded."""
        now = standing(self.study, self.plan)
        known = set(self.study.user_attrs)
        for cid, reason in now.stopped.items():
            if STOPPED_PREFIX + cid not in known:
                self.study.set_user_attr(STOPPED_PREFIX + cid, reason)
        self.race = plan_race([c.id for c in self.plan.candidates], self.plan.seeds, self.plan.min_seeds,
                              self.plan.racing, now.values, now.queued, now.stopped)
        for cid, reason in self.race.stops.items():
            self.study.set_user_attr(STOPPED_PREFIX + cid, reason)
            self.echo(f"confirmation: {cid} {reason}")
        by_id = {c.id: c for c in self.plan.candidates}
        for cid, seed in self.race.wanted:
            candidate = by_id[cid]
            self.study.enqueue_trial(dict(candidate.params), user_attrs={
                STAGE_ATTR: CONFIRM_STAGE, CANDIDATE_ATTR: cid, CONFIRMS_ATTR: candidate.trial,
                CONFIRM_SEED_ATTR: seed})

    def claim(self) -> optuna.Trial | None:
        with store_lock(self.stores.storage_url):
            self._advance()
            # Only a queued training: asking an empty confirmation study would sample a new point.
            if not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return None
            return ask(self.study)

    def finished(self) -> bool:
        with store_lock(self.stores.storage_url):
            self._advance()
        return self.race.done

