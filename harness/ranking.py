"""The confirmed ranking of a study's candidates, and the racing that spends their seeds.

A confirmation re-trains a few configurations the search picked (its candidates) on fresh seeds, the
same seeds for every candidate, so that candidates compare paired by seed: each seed's luck (its
initialisation, data order, noise) is shared and cancels in their difference.

Racing gives the seeds in rounds: `min_seeds` for every candidate first, then one more at a time. After
each round the leader is the candidate with the highest mean; a candidate whose paired gap to the
leader has a 95% Student-t interval wholly below zero stops there, with that reason. The others get
another seed, up to `seeds`; the leader always gets all of them. Without racing every candidate gets
every seed at once.

Why a paired t interval and not Optuna's WilcoxonPruner (bench/racing_tests.py, BENCHMARKS.md): with n
seeds the signed-rank test's smallest one-sided p-value is 1 / 2^n, so the pruner (p < 0.1) can stop no
candidate before its 4th seed, whatever its gap, and on the 3 recorded seeds of kl_schedules_cpu it calls
no gap at all, where the t interval finds Sigmoid below None (-0.42 ± 0.29 dB). The t interval pays for
few seeds with width (12.7 standard errors at 2 seeds, 4.3 at 3), so it stops only gaps that are large
against their spread, which is what racing should stop.

The chance that a candidate beats the leader is a paired bootstrap over seeds: the share of resamples
of its per-seed gaps (n of them, drawn with replacement) whose mean is above zero, ties counting half.
Up to MAX_EXACT seeds it is computed exactly over every resample, so a hand computation gives the same
number; above that, from BOOTSTRAP_DRAWS resamples with a fixed seed.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from harness.intervals import Interval, mean_interval, paired_difference_interval

MAX_EXACT = 8
BOOTSTRAP_DRAWS = 20_000


@dataclass(frozen=True)
class Candidate:
    """A configuration the search picked for confirmation."""
    id: str                          # "c0", "c1", ... in the order they were picked
    trial: int                       # the search trial it confirms
    params: Mapping[str, object]
    roles: tuple[str, ...]           # why it was picked: "top 1", "best of kl_anneal_type=None", "reference"
    search_value: float              # its value in the search (the mean over the search's seeds)

    def to_dict(self) -> dict:
        return {"id": self.id, "trial": self.trial, "params": dict(self.params), "roles": list(self.roles),
                "search_value": self.search_value}

    @classmethod
    def from_dict(cls, values: Mapping) -> Candidate:
        return cls(values["id"], int(values["trial"]), dict(values["params"]), tuple(values["roles"]),
                   float(values["search_value"]))


@dataclass(frozen=True)
class RacePlan:
    """What the confirmation does next: trainings to queue (candidate id, seed), candidates to stop
    (id -> reason), and whether every training it wants is done."""
    wanted: list[tuple[str, int]] = field(default_factory=list)
    stops: dict[str, str] = field(default_factory=dict)
    done: bool = False


def leader(values: Mapping[str, Mapping[int, float]], among: Sequence[str]) -> str | None:
    """The candidate with the highest mean over its seeds, of those `among` that have a value."""
    scored = [cid for cid in among if values.get(cid)]
    return max(scored, key=lambda cid: (float(np.mean(list(values[cid].values()))), cid), default=None)


def paired_gap(values: Mapping[str, Mapping[int, float]], cid: str, other: str) -> Interval:
    """`cid`'s value minus `other`'s with a 95% interval, paired over the seeds both have."""
    shared = sorted(set(values.get(cid, {})) & set(values.get(other, {})))
    return paired_difference_interval([values[cid][s] for s in shared], [values[other][s] for s in shared])


def plan_race(candidates: Sequence[str], seeds: Sequence[int], min_seeds: int, racing: bool,
              values: Mapping[str, Mapping[int, float]], queued: Mapping[str, set[int]],
              stopped: Mapping[str, str]) -> RacePlan:
    """The next step of a confirmation, from what it holds: `values` (candidate -> seed -> value of its
    finished trainings), `queued` (candidate -> seeds already queued, running or finished) and
    `stopped` (candidates already stopped, with their reasons). Deterministic, so any worker may plan."""
    if not racing:
        wanted = [(cid, s) for cid in candidates for s in seeds if s not in queued.get(cid, set())]
        done = all(len(values.get(cid, {})) == len(seeds) for cid in candidates)
        return RacePlan(wanted, {}, done and not wanted)
    active = [cid for cid in candidates if cid not in stopped]
    # The round every active candidate is in: the fewest seeds any of them has queued.
    have = {cid: len(queued.get(cid, set())) for cid in active}
    target = max(min_seeds, min(have.values(), default=0))
    round_seeds = list(seeds[:target])
    if any(not set(round_seeds) <= queued.get(cid, set()) for cid in active):
        return RacePlan([(cid, s) for cid in active for s in round_seeds if s not in queued.get(cid, set())])
    if any(not set(round_seeds) <= set(values.get(cid, {})) for cid in active):
        return RacePlan()           # the round is queued and not finished: wait for it
    if target >= len(seeds):        # the last round: every candidate has every seed, nothing left to save
        return RacePlan([], {}, True)
    # The round is finished: stop the candidates clearly below the leader, then give the rest a seed.
    top = leader(values, active)
    stops = {}
    for cid in active:
        if cid == top:
            continue
        gap = paired_gap(values, cid, top)
        if math.isfinite(gap.half_width) and gap.high < 0:
            stops[cid] = (f"stopped after {len(round_seeds)} seeds: its gap to the leader {top}, paired by seed, is "
                          f"{gap.mean:+.2f} ± {gap.half_width:.2f} dB, wholly below zero")
    survivors = [cid for cid in active if cid not in stops]
    return RacePlan([(cid, seeds[target]) for cid in survivors], stops)


def win_probability(gaps: Sequence[float]) -> float:
    """The paired bootstrap chance that a candidate beats the leader, from its per-seed gaps to it (see
    the module's doc); NaN without gaps."""
    n = len(gaps)
    if n == 0:
        return math.nan
    gaps = np.asarray(gaps, dtype=float)
    if n <= MAX_EXACT:
        # Every resample is a multiset of the n seeds: count each by its multinomial weight.
        total = won = 0.0
        for combo in itertools.combinations_with_replacement(range(n), n):
            counts = np.bincount(combo, minlength=n)
            weight = math.factorial(n) / math.prod(math.factorial(int(c)) for c in counts)
            mean = float(counts @ gaps) / n
            total += weight
            won += weight * (1.0 if mean > 1e-12 else 0.5 if abs(mean) <= 1e-12 else 0.0)
        return won / total
    draws = np.random.default_rng(0).integers(0, n, size=(BOOTSTRAP_DRAWS, n))
    means = gaps[draws].mean(axis=1)
    return float(((means > 1e-12).sum() + 0.5 * (np.abs(means) <= 1e-12).sum()) / BOOTSTRAP_DRAWS)


@dataclass(frozen=True)
class Ranked:
    """One row of the confirmed ranking."""
    candidate: Candidate
    seeds: int
    value: Interval                  # the mean over its confirmation seeds with its 95% interval
    gap: Interval                    # minus the leader's, paired by seed (0 for the leader)
    win_probability: float           # paired bootstrap chance of beating the leader (NaN for the leader)
    stopped: str                     # why racing stopped it ("" if it ran to the end)

    @property
    def optimism(self) -> float:
        """How much its search score overstates what fresh seeds give it (the winner's curse)."""
        return self.candidate.search_value - self.value.mean

    @property
    def within_noise(self) -> bool:
        return self.gap.holds_zero


def confirmed_ranking(candidates: Sequence[Candidate], values: Mapping[str, Mapping[int, float]],
                      stopped: Mapping[str, str]) -> list[Ranked]:
    """The candidates that have a confirmation value, the leader first (the best mean of those racing did
    not stop), then by mean, each against the leader."""
    scored = [c for c in candidates if values.get(c.id)]
    top = leader(values, [c.id for c in scored if c.id not in stopped]) or leader(values, [c.id for c in scored])
    rows = []
    for c in scored:
        own = values[c.id]
        if c.id == top:
            gap, chance = Interval(0.0, 0.0), math.nan
        else:
            gap = paired_gap(values, c.id, top)
            shared = sorted(set(own) & set(values[top]))
            chance = win_probability([own[s] - values[top][s] for s in shared])
        rows.append(Ranked(c, len(own), mean_interval(list(own.values())), gap, chance, stopped.get(c.id, "")))
    return sorted(rows, key=lambda r: (r.candidate.id != top, -r.value.mean))


def ranking_rows(ranking: Sequence[Ranked]) -> list[dict[str, object]]:
    """The ranking as table rows (printed, CSV, HTML, MLflow), the leader first."""
    rows = []
    for place, row in enumerate(ranking, start=1):
        leads = place == 1
        rows.append({
            "rank": place, "candidate": row.candidate.id, "search_trial": row.candidate.trial,
            "picked_as": ", ".join(row.candidate.roles),
            "params": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in row.candidate.params.items()),
            "seeds": row.seeds, "confirmed_psnr": row.value.mean, "ci95": row.value.half_width,
            "gap_to_leader": row.gap.mean, "gap_ci95": row.gap.half_width,
            "vs_leader": "leader" if leads else ("within noise" if row.within_noise else "below"),
            "p_beats_leader": row.win_probability,
            "search_psnr": row.candidate.search_value, "optimism": row.optimism,
            "stopped": row.stopped,
        })
    return rows
