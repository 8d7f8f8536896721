"""Intervals over seeds against hand computations (Student t, paired and Welch), and how reports read them."""
import math

import optuna
import pytest

from harness.intervals import Interval, difference_interval, mean_interval, paired_difference_interval
from harness.report.tables import gap_interval, verdict

# t quantiles (0.975) from a printed table: df 2 -> 4.303, df 3 -> 3.182.
T_2, T_3 = 4.302653, 3.182446


def test_mean_interval_is_student_t_over_the_seeds():
    interval = mean_interval([20.0, 21.0, 22.0])       # mean 21, sample sd 1
    assert interval.mean == pytest.approx(21.0)
    assert interval.half_width == pytest.approx(T_2 * 1.0 / math.sqrt(3), rel=1e-5)
    assert (interval.low, interval.high) == pytest.approx((21 - interval.half_width, 21 + interval.half_width))


def test_one_seed_has_a_mean_but_no_interval():
    interval = mean_interval([20.5])
    assert interval.mean == 20.5 and math.isnan(interval.half_width)
    assert interval.holds_zero and interval.describe() == "20.50 dB"


def test_welch_interval_of_a_gap():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    # by hand: var_a / n_a = 1 / 3, var_b / n_b = (20 / 3) / 4 = 5 / 3, se^2 = 2
    # df = 2^2 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 4 / (1/18 + 25/27) = 4.0755...
    df = 4 / (1 / 18 + 25 / 27)
    assert df == pytest.approx(4.0755, abs=1e-4)
    from scipy import stats
    gap = difference_interval(a, b)
    assert gap.mean == pytest.approx(2.0 - 5.0)
    assert gap.half_width == pytest.approx(stats.t.ppf(0.975, df) * math.sqrt(2))
    assert stats.t.ppf(0.975, 3) == pytest.approx(T_3, rel=1e-6)     # the library agrees with the table
    assert gap.holds_zero            # -3 +- 3.9: within noise


def test_a_gap_beyond_noise_and_the_verdicts():
    clear = difference_interval([25.0, 25.2, 24.9], [22.0, 22.1, 21.8])
    assert clear.low > 0 and not clear.holds_zero and verdict(clear) == "better"
    assert verdict(difference_interval([22.0, 22.1, 21.8], [25.0, 25.2, 24.9])) == "worse"
    assert verdict(difference_interval([22.0, 23.0], [22.5, 22.4])) == "within noise"
    assert verdict(difference_interval([22.0], [21.0, 21.5])) == "no interval (1 seed)"
    assert verdict(Interval(math.nan, math.nan)) == ""


def test_identical_spreadless_values_give_a_zero_width_interval():
    assert difference_interval([3.0, 3.0], [1.0, 1.0]) == Interval(2.0, 0.0)


def test_paired_gap_is_the_student_t_interval_of_per_seed_differences():
    a, b = [24.59, 22.73, 21.70], [18.82, 18.60, 15.95]      # per-seed differences 5.77, 4.13, 5.75
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    gap = paired_difference_interval(a, b)
    assert gap.mean == pytest.approx(mean) and gap.half_width == pytest.approx(T_2 * sd / math.sqrt(3))
    # The seeds' shared luck cancels: narrower than Welch's interval on the same values.
    assert gap.half_width < difference_interval(a, b).half_width
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference_interval([1.0, 2.0], [1.0])


def _trial(values: list[float], seeds: list[int]) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(value=sum(values) / len(values), state=optuna.trial.TrialState.COMPLETE,
                                     user_attrs={"seeds": seeds, "seed_values": values})


def test_trials_on_the_same_seeds_are_compared_pairwise_else_by_welch():
    a, b = [24.59, 22.73, 21.70], [18.82, 18.60, 15.95]
    assert gap_interval(_trial(a, [0, 1, 2]), _trial(b, [0, 1, 2])) == paired_difference_interval(a, b)
    assert gap_interval(_trial(a, [0, 1, 2]), _trial(b, [5, 6, 7])) == difference_interval(a, b)
    # Two trials that trained the same schedule on the same seeds agree seed by seed: no gap at all.
    same = gap_interval(_trial(a, [0, 1, 2]), _trial(a, [0, 1, 2]))
    assert same == Interval(0.0, 0.0) and verdict(same) == "within noise"
    assert not math.isfinite(gap_interval(_trial(a, [0, 1, 2]), None).mean)
