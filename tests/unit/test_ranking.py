"""harness/ranking.py: the racing plan's rounds and the chance of beating the leader, against hand counts."""
from __future__ import annotations

import itertools
import math

import pytest

from harness.ranking import plan_race, win_probability

SEEDS = [10, 11, 12, 13]


@pytest.mark.parametrize("gaps, expected", [
    ([1.0, -3.0], 1 / 4),                 # resamples (1,1) win; (1,-3), (-3,1), (-3,-3) lose
    ([1.0, 1.0, -1.0], 20 / 27),          # win unless -1 is drawn twice or more: 8 + 12 of 27
    ([0.5, -0.5], (1 + 0.5 * 2) / 4),     # (.5,-.5) and (-.5,.5) tie: half each
    ([2.0], 1.0), ([-2.0], 0.0),
])
def test_the_chance_of_beating_the_leader_is_the_exact_paired_bootstrap(gaps, expected):
    assert win_probability(gaps) == pytest.approx(expected)


def test_above_eight_seeds_the_bootstrap_is_sampled_and_agrees_with_the_exact_count():
    gaps = [0.4, -0.1, 0.3, -0.5, 0.2, 0.1, -0.2, 0.6, -0.3]
    means = [sum(draw) / 9 for draw in itertools.product(gaps[:5], repeat=5)]     # exact for the first 5
    exact = (sum(m > 1e-12 for m in means) + 0.5 * sum(abs(m) <= 1e-12 for m in means)) / len(means)
    assert win_probability(gaps[:5]) == pytest.approx(exact)
    assert 0 < win_probability(gaps) < 1 and win_probability(gaps) == win_probability(gaps)   # fixed seed
    assert math.isnan(win_probability([]))


def test_rounds_queue_min_seeds_then_one_more_for_the_survivors():
    first = plan_race(["a", "b"], SEEDS, 2, True, {}, {}, {})
    assert first.wanted == [("a", 10), ("a", 11), ("b", 10), ("b", 11)] and not first.done
    queued = {"a": {10, 11}, "b": {10, 11}}
    assert plan_race(["a", "b"], SEEDS, 2, True, {"a": {10: 1.0}}, queued, {}).wanted == []   # wait for the round
    close = {"a": {10: 24.0, 11: 23.0}, "b": {10: 23.5, 11: 23.6}}
    second = plan_race(["a", "b"], SEEDS, 2, True, close, queued, {})
    assert second.wanted == [("a", 12), ("b", 12)] and second.stops == {}


def test_the_last_round_ends_the_race_without_stopping_anyone():
    values = {"a": dict.fromkeys(SEEDS, 24.0), "b": {s: 10.0 + 0.1 * s for s in SEEDS}}
    queued = {cid: set(SEEDS) for cid in values}
    plan = plan_race(["a", "b"], SEEDS, 2, True, values, queued, {})
    assert plan.done and plan.stops == {} and plan.wanted == []
