"""Schedules against their closed forms, evaluated by hand at chosen epochs."""
import math

import pytest

from models.schedules import KLAnnealing, TeacherForcing, kl_beta, teacher_forcing_ratio


def betas(kind, epochs, n_cycle=1, ratio=1.0):
    """Drive the stateful schedule the way the trainer does: read, then step once per epoch."""
    schedule = KLAnnealing(kind, epochs, n_cycle, ratio)
    values = []
    for _ in range(epochs):
        values.append(schedule.beta)
        schedule.step()
    return values


def test_none_is_always_one():
    assert betas("None", 5) == [1.0] * 5


def test_monotonic_rises_linearly_then_stays_at_one():
    # E=10, R=0.5: beta = min(1, e / 5)
    assert betas("Monotonic", 10, ratio=0.5) == pytest.approx([0, .2, .4, .6, .8, 1, 1, 1, 1, 1])
    # R=1: the ramp spans the whole run
    assert betas("Monotonic", 4) == pytest.approx([0, .25, .5, .75])


def test_cyclical_matches_the_lab_defaults():
    # E=70, M=10 cycles (period 7), R=1: beta = (e mod 7) / 7, restarting each cycle.
    values = betas("Cyclical", 70, n_cycle=10, ratio=1.0)
    assert values[:8] == pytest.approx([0, 1 / 7, 2 / 7, 3 / 7, 4 / 7, 5 / 7, 6 / 7, 0])
    assert values[69] == pytest.approx(6 / 7)
    assert values.count(0.0) == 10


def test_cyclical_ramp_rises_then_holds_at_one():
    # E=20, M=4 (period 5), R=0.6: beta = min(1, (e mod 5) / 5 / 0.6) = 0, 1/3, 2/3, 1, 1
    values = betas("Cyclical", 20, n_cycle=4, ratio=0.6)
    assert values[5:10] == pytest.approx([0, 1 / 3, 2 / 3, 1, 1])
    # The ramp must rise within each cycle (a circulating bug decrements it).
    for cycle in range(4):
        ramp = values[cycle * 5:cycle * 5 + 4]
        assert ramp == sorted(ramp)


def test_cyclical_with_a_fractional_period():
    # E=10, M=3: period 10/3; e=4 -> tau = (4 - 10/3) / (10/3) = 0.2
    assert kl_beta("Cyclical", 4, 10, n_cycle=3, ratio=1.0) == pytest.approx(0.2)


def test_sigmoid_is_a_smooth_rise_through_one_half():
    values = betas("Sigmoid", 20, ratio=1.0)
    # x = e / 20; beta = 1 / (1 + exp(-12 (x - 0.5)))
    assert values[10] == pytest.approx(0.5)
    assert values[0] == pytest.approx(1 / (1 + math.exp(6)))
    assert values[15] == pytest.approx(1 / (1 + math.exp(-12 * 0.25)))
    assert all(b > a for a, b in zip(values, values[1:]))


def test_unknown_kind_is_rejected_at_construction():
    with pytest.raises(ValueError, match="Linear"):
        KLAnnealing("Linear", 10)


def test_teacher_forcing_lab_defaults():
    # tfr 1.0, decay from epoch 10 by 0.1: epochs 0..9 -> 1.0, 10 -> 0.9, ..., 19 -> 0.0, floor 0 after.
    schedule = TeacherForcing(1.0, 10, 0.1)
    values = []
    for _ in range(25):
        values.append(schedule.ratio)
        schedule.step()
    assert values[:10] == [1.0] * 10
    assert values[10:20] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0], abs=1e-12)
    assert values[20:] == [0.0] * 5


def test_teacher_forcing_seed_setting_reaches_zero_by_epoch_19():
    # The seed's setting: 0.8 from epoch 12 on by 0.1 -> 0.8 - 0.1 * (19 - 12 + 1) = 0.
    assert teacher_forcing_ratio(11, 0.8, 12, 0.1) == 0.8
    assert teacher_forcing_ratio(12, 0.8, 12, 0.1) == pytest.approx(0.7)
    assert teacher_forcing_ratio(19, 0.8, 12, 0.1) == pytest.approx(0.0, abs=1e-12)


def test_schedule_state_round_trips():
    kl = KLAnnealing("Cyclical", 30, 3, 0.5)
    tf = TeacherForcing(1.0, 2, 0.25)
    for _ in range(2):
        kl.step()
        tf.step()
    kl2, tf2 = KLAnnealing("Cyclical", 30, 3, 0.5), TeacherForcing(1.0, 2, 0.25)
    kl2.load_state_dict(kl.state_dict())
    tf2.load_state_dict(tf.state_dict())
    assert (kl2.beta, tf2.ratio) == (kl.beta, tf.ratio) == (pytest.approx(0.4), 0.75)


def test_the_registry_is_what_config_and_report_read():
    from harness.report.figures import anneal_color
    from models.config import CHOICES
    from models.schedules import KL_SCHEDULES

    assert CHOICES["kl_anneal_type"] == tuple(KL_SCHEDULES) == ("None", "Monotonic", "Cyclical", "Sigmoid")
    colours = [anneal_color(name) for name in KL_SCHEDULES]
    assert len(set(colours)) == len(colours)          # every schedule its own colour
