"""A study's confirmation as its store holds it: the plan recorded when it was made (candidates, fresh
seeds, racing), and where it stands (each candidate's values by seed, what is queued, what racing
stopped). Read by the workers that carry it on and by the report."""
from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from harness.outputs.names import (CANDIDATE_ATTR, CANDIDATES_ATTR, CONFIRM_SEED_ATTR, CONFIRM_SEEDS_ATTR,
                                   RACE_ATTR, STOPPED_PREFIX)
from harness.ranking import Candidate

from .trials import retried_numbers


@dataclass(frozen=True)
class Plan:
    """A confirmation's fixed part, recorded on its study when it is made."""
    candidates: list[Candidate]
    seeds: list[int]
    min_seeds: int
    racing: bool

    def attrs(self) -> dict:
        return {CANDIDATES_ATTR: [c.to_dict() for c in self.candidates], CONFIRM_SEEDS_ATTR: self.seeds,
                RACE_ATTR: {"min_seeds": self.min_seeds, "racing": self.racing}}

    @classmethod
    def of(cls, attrs: dict) -> Plan:
        race = attrs[RACE_ATTR]
        return cls([Candidate.from_dict(c) for c in attrs[CANDIDATES_ATTR]], list(attrs[CONFIRM_SEEDS_ATTR]),
                   int(race["min_seeds"]), bool(race["racing"]))


@dataclass(frozen=True)
class Standing:
    """What a confirmation holds now: each candidate's values by seed, the seeds queued for it (waiting,
    running or done), and the candidates stopped (id -> why)."""
    values: dict[str, dict[int, float]]
    queued: dict[str, set[int]]
    stopped: dict[str, str]
    waiting: int


def standing(study: optuna.Study, plan: Plan) -> Standing:
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    values: dict[str, dict[int, float]] = {c.id: {} for c in plan.candidates}
    queued: dict[str, set[int]] = {c.id: set() for c in plan.candidates}
    stopped = {key.removeprefix(STOPPED_PREFIX): reason for key, reason in study.user_attrs.items()
               if key.startswith(STOPPED_PREFIX)}
    for trial in trials:
        cid, seed = trial.user_attrs.get(CANDIDATE_ATTR), trial.user_attrs.get(CONFIRM_SEED_ATTR)
        if cid not in values or (trial.state == TrialState.FAIL and trial.number in retried):
            continue        # an attempt whose retry stands for it
        queued[cid].add(seed)
        if trial.state == TrialState.COMPLETE:
            values[cid][seed] = float(trial.value)
        elif trial.state == TrialState.FAIL and cid not in stopped:
            # Diverged, or its retries ran out: the configuration is not a stable answer.
            stopped[cid] = f"stopped: its training on seed {seed} failed ({trial.user_attrs.get('fail_reason') or '?'})"
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return Standing(values, queued, stopped, waiting)
