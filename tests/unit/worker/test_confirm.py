"""The confirmation stage in process, on SQLite stores, with a fast fake objective in place of training:
which candidates it picks, that its seeds are fresh, that racing stops a clearly worse candidate after
the first round and keeps close ones, and that the report's numbers are the hand computation's."""
from __future__ import annotations

import itertools
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from harness.outputs.names import CONFIRM_SEED_ATTR, STOPPED_PREFIX, confirm_study_name
from harness.report.confirmation import read_confirmation
from harness.spec import load_study_spec
from harness.store.locations import resolve_stores
from harness.store.optuna_storage import open_storage
from harness.worker.confirm import ConfirmTrials, fresh_seeds, open_confirmation, pick_candidates
from spec_helpers import base_spec, write_spec

KINDS = ["None", "Monotonic", "Cyclical"]
SPACE = {"kl_anneal_type": CategoricalDistribution(KINDS), "lr": FloatDistribution(1e-4, 1e-2, log=True)}


def spec_with(tmp_path, **confirm):
    raw = base_spec()
    raw["search_space"] = {"kl_anneal_type": {"type": "categorical", "choices": KINDS},
                           "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    raw["enqueue"] = [{"kl_anneal_type": "Cyclical", "lr": 0.001}]
    raw["confirm"] = confirm
    return load_study_spec(write_spec(tmp_path, raw))


def search_study(stores, trials: list[tuple[str, float, float]], seeds=(0, 1, 2)) -> optuna.Study:
    """A finished search: one completed trial per (kl type, lr, value), the first the reference."""
    study = optuna.create_study(study_name="t", storage=stores.storage_url, direction="maximize")
    for number, (kind, lr, value) in enumerate(trials):
        attrs = {"seeds": list(seeds)} | ({"enqueued": "reference"} if number == 0 else {})
        study.add_trial(create_trial(params={"kl_anneal_type": kind, "lr": lr}, distributions=SPACE, value=value,
                                     user_attrs=attrs))
    return study


SEARCH = [("Cyclical", 0.001, 23.0),      # the reference
          ("None", 0.002, 24.5), ("None", 0.003, 24.9), ("Monotonic", 0.002, 24.1), ("Cyclical", 0.004, 22.0),
          ("Monotonic", 0.005, 20.0)]


def test_candidates_are_the_top_the_best_of_each_group_and_the_reference(tmp_path, runs_dir):
    spec = spec_with(tmp_path, top=1, per="kl_anneal_type")
    study = search_study(resolve_stores(runs_dir), SEARCH)
    picked = pick_candidates(spec, study.get_trials())
    assert [(c.id, c.trial, c.roles) for c in picked] == [
        ("c0", 2, ("top 1", "best of kl_anneal_type=None")),
        ("c1", 3, ("best of kl_anneal_type=Monotonic",)),
        ("c2", 0, ("best of kl_anneal_type=Cyclical", "reference")),
    ]
    assert picked[0].search_value == 24.9 and picked[0].params == {"kl_anneal_type": "None", "lr": 0.003}


def test_a_configuration_the_search_trained_twice_is_confirmed_once(tmp_path, runs_dir):
    spec = spec_with(tmp_path, top=3)
    study = search_study(resolve_stores(runs_dir), [("Cyclical", 0.001, 23.0), ("None", 0.002, 24.0),
                                                    ("None", 0.002, 23.5)])
    assert [c.trial for c in pick_candidates(spec, study.get_trials())] == [1, 0]


def test_confirmation_seeds_are_ones_no_search_trial_used():
    trials = [create_trial(value=1.0, user_attrs={"seeds": seeds}) for seeds in ([0, 1, 2], [0, 1, 2], [5])]
    seeds = fresh_seeds(trials, 4)
    assert seeds == [6, 7, 8, 9] and not set(seeds) & {0, 1, 2, 5}


# -- racing, with a fake objective ----------------------------------------------------------------------

def race(study: optuna.Study, stores, objective) -> list[optuna.trial.FrozenTrial]:
    """Claim and finish the confirmation's trainings one by one with `objective(params, seed)`, as one
    worker would; the trainings in the order they were claimed."""
    source, claimed = ConfirmTrials(study, stores, echo=lambda line: None), []
    while (trial := source.claim()) is not None:
        claimed.append(trial)
        study.tell(trial, objective(queued_params(trial), trial.user_attrs[CONFIRM_SEED_ATTR]))
    assert source.finished(), "nothing to claim, but the confirmation is not done"
    return claimed


def queued_params(trial: optuna.Trial) -> dict:
    """The params a confirmation training was queued with (a worker suggests them from the spec)."""
    return {"kl_anneal_type": trial.suggest_categorical("kl_anneal_type", KINDS),
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True)}


# Per-seed luck that every candidate shares (the paired design cancels it), and each type's true value.
LUCK = {3: 0.9, 4: -0.7, 5: 0.4, 6: -0.2, 7: 0.1}
TRUTH = {"None": 24.0, "Monotonic": 23.95, "Cyclical": 16.0}


# And what each candidate's own training adds on each seed: the noise left in a paired gap (~0.3 dB).
OWN = {"None": [0.3, -0.2, 0.1, -0.4, 0.2], "Monotonic": [-0.1, 0.35, -0.3, 0.2, 0.0],
       "Cyclical": [0.2, -0.3, 0.1, 0.0, -0.1]}


def fake(params: dict, seed: int) -> float:
    kind = params["kl_anneal_type"]
    return TRUTH[kind] + LUCK[seed] + OWN[kind][seed - 3]


@pytest.fixture
def confirmation(tmp_path, runs_dir):
    def make(**confirm):
        spec = spec_with(tmp_path, top=1, per="kl_anneal_type", **confirm)
        stores = resolve_stores(runs_dir)
        search = search_study(stores, SEARCH)
        study = open_confirmation(spec, stores, open_storage(stores), search, echo=lambda line: None)
        return study, stores
    return make


def test_racing_stops_a_clearly_worse_candidate_after_the_first_round_and_keeps_close_ones(confirmation):
    study, stores = confirmation(seeds=5, min_seeds=2, racing=True)
    claimed = race(study, stores, fake)
    by_candidate: dict[str, list[int]] = {}
    for trial in claimed:
        by_candidate.setdefault(trial.user_attrs["candidate"], []).append(trial.user_attrs[CONFIRM_SEED_ATTR])
    assert study.user_attrs["confirm_seeds"] == [3, 4, 5, 6, 7]     # after the search's 0..2
    # c2 (Cyclical, 8 dB below) stops after the first round of 2 seeds (with one degree of freedom the t
    # interval is 12.7 standard errors wide); c0 and c1 (0.05 dB apart) run all 5.
    assert by_candidate == {"c0": [3, 4, 5, 6, 7], "c1": [3, 4, 5, 6, 7], "c2": [3, 4]}
    assert study.user_attrs[STOPPED_PREFIX + "c2"].startswith("stopped after 2 seeds: its gap to the leader")
    assert len(claimed) == 12      # of 15 without racing
    # Rounds: every candidate's first two seeds before anyone's third.
    assert all(t.user_attrs[CONFIRM_SEED_ATTR] in (3, 4) for t in claimed[:6])


def test_without_racing_every_candidate_gets_every_seed(confirmation):
    study, stores = confirmation(seeds=3, min_seeds=2, racing=False)
    claimed = race(study, stores, fake)
    assert len(claimed) == 9 and not any(key.startswith(STOPPED_PREFIX) for key in study.user_attrs)


def test_a_second_worker_planning_at_once_queues_nothing_twice(confirmation):
    study, stores = confirmation(seeds=3, min_seeds=2, racing=True)
    first, second = ConfirmTrials(study, stores, lambda line: None), ConfirmTrials(study, stores, lambda line: None)
    a, b = first.claim(), second.claim()
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert a.number != b.number and len(waiting) + 2 == 6      # 3 candidates x 2 seeds, each queued once


def test_a_failed_training_stops_its_candidate_with_the_reason(confirmation):
    study, stores = confirmation(seeds=3, min_seeds=2, racing=True)
    source = ConfirmTrials(study, stores, lambda line: None)
    while (trial := source.claim()) is not None:
        params = queued_params(trial)
        if params["kl_anneal_type"] == "Monotonic":
            trial.set_user_attr("fail_reason", "diverged at epoch 1")
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, fake(params, trial.user_attrs[CONFIRM_SEED_ATTR]))
    assert source.finished()
    assert "failed (diverged at epoch 1)" in study.user_attrs[STOPPED_PREFIX + "c1"]


def test_the_reported_ranking_is_the_hand_computation(confirmation):
    study, stores = confirmation(seeds=4, min_seeds=3, racing=True)
    values = {"None": [25.0, 24.0, 23.5, 24.5], "Monotonic": [24.0, 24.5, 22.0, 24.0],
              "Cyclical": [20.0, 19.5, 19.0, 20.0]}
    race(study, stores, lambda params, seed: values[params["kl_anneal_type"]][seed - 3])
    found = read_confirmation(stores, "t")
    # Cyclical is stopped after the first round of 3 seeds; the other two get the 4th.
    assert not found.running and (found.trainings_done, found.trainings_racing_saved) == (11, 1)
    table = found.table().set_index("candidate")
    t3 = 3.182446          # Student t(0.975, 3 degrees of freedom)
    # c0 (None), the leader: mean 24.25; deviations .75 -.25 -.75 .25 -> sd sqrt(1.25 / 3)
    assert table.loc["c0", "confirmed_psnr"] == pytest.approx(24.25)
    assert table.loc["c0", "ci95"] == pytest.approx(t3 * math.sqrt(1.25 / 3) / 2, rel=1e-5)
    # c1 (Monotonic) minus the leader, paired by seed: -1, +.5, -1.5, -.5 -> mean -.625, sd sqrt(2.1875 / 3)
    gaps = [-1.0, 0.5, -1.5, -0.5]
    assert table.loc["c1", "gap_to_leader"] == pytest.approx(-0.625)
    assert table.loc["c1", "gap_ci95"] == pytest.approx(t3 * math.sqrt(2.1875 / 3) / 2, rel=1e-5)
    assert table.loc["c1", "vs_leader"] == "within noise"
    # Paired bootstrap, by brute force over the 4^4 ordered resamples (ties count half).
    means = [sum(draw) / 4 for draw in itertools.product(gaps, repeat=4)]
    expected = (sum(m > 1e-12 for m in means) + 0.5 * sum(abs(m) <= 1e-12 for m in means)) / len(means)
    assert table.loc["c1", "p_beats_leader"] == pytest.approx(expected)
    assert table.loc["c0", "optimism"] == pytest.approx(24.9 - 24.25)      # search score minus confirmed mean
    assert table.loc["c2", "stopped"].startswith("stopped after 3 seeds")
    assert table.loc["c2", "seeds"] == 3 and table.loc["c2", "vs_leader"] == "below"
    assert list(table["rank"]) == [1, 2, 3]


def test_the_confirmation_study_is_kept_apart_from_the_search(confirmation):
    study, stores = confirmation(seeds=2, min_seeds=2, racing=True)
    race(study, stores, fake)
    names = optuna.get_all_study_names(stores.storage_url)
    assert sorted(names) == ["t", confirm_study_name("t")]
    search = optuna.load_study(study_name="t", storage=stores.storage_url)
    assert len(search.trials) == len(SEARCH)        # its counts, best trial and sampler never see them
