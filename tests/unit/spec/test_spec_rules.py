"""Study-spec rules beyond test_studies' bad specs: each message names the key and says what is wrong,
values read as the spec means them, and the training-config check names the value at fault."""
import math

import pytest

from harness.spec import SpecError, load_study_spec
from harness.worker.search import make_pruner
from spec_helpers import DELETE, changed_spec

SS = ("search_space",)
RATIO_ON_CYCLE = {"type": "float", "low": 0.1, "high": 1.0, "when": {"kl_anneal_cycle": [20]}}
STEPPED_LR = {"type": "float", "low": 0.001, "high": 0.003, "step": 0.001}
BAD_SPECS = [
    # (id, {path: value}, the key the message names, a part of the message)
    ("when-value-outside-int-range", {SS + ("kl_anneal_ratio",): RATIO_ON_CYCLE},
     "search_space.kl_anneal_ratio.when.kl_anneal_cycle", "20 is not a value of kl_anneal_cycle (int range [1, 10])"),
    ("when-value-a-list", {SS + ("kl_anneal_cycle", "when"): {"kl_anneal_type": [["Cyclical"]]}},
     "search_space.kl_anneal_cycle.when.kl_anneal_type", "['Cyclical'] is not a value of kl_anneal_type"),
    ("when-null", {SS + ("kl_anneal_cycle", "when"): None}, "search_space.kl_anneal_cycle.when",
     "expected a mapping, got null"),
    ("param-type-null", {SS + ("lr", "type"): None}, "search_space.lr.type",
     "expected one of categorical, int, float, got None"),
    ("param-key-not-string", {SS + (1,): {"type": "int", "low": 1, "high": 2}}, "search_space.1",
     "expected a string, got int 1"),
    ("choice-a-mapping", {SS + ("kl_anneal_type", "choices"): ["None", {"a": 1}]},
     "search_space.kl_anneal_type.choices", "choices must be scalars, got dict"),
    ("float-low-infinite", {SS + ("lr", "low"): -math.inf, SS + ("lr", "log"): False}, "search_space.lr.low",
     "must be finite"),
    ("log-null", {SS + ("lr", "log"): None}, "search_space.lr.log", "expected true or false, got null"),
    ("enqueue-bool-for-int", {("enqueue", 0, "kl_anneal_cycle"): True}, "enqueue.0.kl_anneal_cycle",
     "True is outside int range [1, 10]"),
    ("enqueue-bool-for-int-choice", {SS + ("kl_anneal_cycle",): {"type": "categorical", "choices": [1, 10]},
                                     ("enqueue", 0, "kl_anneal_cycle"): True},
     "enqueue.0.kl_anneal_cycle", "True is outside choices [1, 10]"),
    ("enqueue-between-steps", {SS + ("lr",): STEPPED_LR, ("enqueue", 0, "lr"): 0.0025}, "enqueue.0.lr",
     "0.0025 is outside float range [0.001, 0.003], step 0.001"),
    ("enqueue-trial-not-mapping", {("enqueue",): [["Cyclical"]]}, "enqueue.0", "expected a mapping"),
    ("timeout-infinite", {("timeout",): math.inf}, "timeout", "must be finite"),
    ("timeout-zero", {("timeout",): 0}, "timeout", "must be > 0, got 0"),
    ("timeout-bool", {("timeout",): True}, "timeout", "expected a number, got bool True"),
    ("seeds-zero", {("seeds",): 0}, "seeds", "must be >= 1, got 0"),
    ("pack-zero", {("pack",): 0}, "pack", "must be >= 1, got 0"),
    ("data-empty", {("data",): ""}, "data", "empty; write 'synthetic'"),
    ("name-missing", {("name",): DELETE}, "name", "missing"),
    ("objective-null", {("objective",): None}, "objective", "expected a mapping, got null"),
    ("direction-null", {("objective",): {"direction": None}}, "objective.direction", "expected a string, got null"),
    ("search-space-null", {SS: None}, "search_space", "expected a mapping, got null"),
    ("budget-key-not-string", {("budget", 3): 1}, "budget.3", "expected a string"),
    ("sampler-null", {("sampler",): None}, "sampler", "expected a mapping, got null"),
    ("sampler-seed-null", {("sampler",): {"type": "tpe", "seed": None}}, "sampler.seed", "expected an integer"),
    ("pruner-type-null", {("pruner",): {"type": None}}, "pruner.type",
     "expected one of median, hyperband, threshold, none, got None"),
    ("hyperband-min-resource-zero", {("pruner",): {"type": "hyperband", "min_resource": 0}}, "pruner.min_resource",
     "must be >= 1, got 0"),
    ("hyperband-max-resource-zero", {("pruner",): {"type": "hyperband", "max_resource": 0}}, "pruner.max_resource",
     "expected an integer >= 1 or 'auto', got 0"),
    ("threshold-lower-null", {("pruner",): {"type": "threshold", "lower": None, "upper": 3}}, "pruner.lower",
     "expected a number, got null"),
    ("threshold-infinite", {("pruner",): {"type": "threshold", "upper": math.inf}}, "pruner.upper", "must be finite"),
    # the check against TrainConfig
    ("config-wrong-alone", {("fixed", "first_pose"): True}, "fixed.first_pose", "first_pose needs first_frame"),
    ("config-several-wrong", {("fixed", "first_pose"): True, ("fixed", "first_frame"): True, ("fixed", "f_dim"): 3,
                              ("budget", "partial"): 3.0},
     "fixed.f_dim", "f_dim must be a multiple of 8, got 3"),
    ("config-clash", {("budget",): {"epochs": 2, "val_epoch_len": 64, "val_vi_len": 32}}, "budget.val_vi_len",
     "val_epoch_len must be in [2, val_vi_len=32], got 64 (together with budget.val_epoch_len)"),
    ("config-needs-another-value", {SS + ("appearance_attention",): {"type": "categorical", "choices": [False, True]},
                                    SS + ("appearance_colours",): {"type": "categorical", "choices": [False, True]}},
     "search_space.appearance_colours", "TrainConfig rejects True: appearance_colours needs appearance_attention"),
    ("config-rejects-high", {SS + ("kl_anneal_ratio",): {"type": "float", "low": 0.5, "high": 2.0}},
     "search_space.kl_anneal_ratio", "TrainConfig rejects 2.0: kl_anneal_ratio must be in (0, 1]"),
]


@pytest.mark.parametrize("changes, key, says", [case[1:] for case in BAD_SPECS], ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_says_what_is_wrong_with_the_key(tmp_path, changes, key, says):
    path = changed_spec(tmp_path, changes)
    with pytest.raises(SpecError) as info:
        load_study_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: ") and says in message, message


@pytest.mark.parametrize("path, allowed", [
    (SS + ("lr", "lo"), "type, when, low, high, step, log"),
    (SS + ("kl_anneal_type", "low"), "type, when, choices"),
    (("sampler", "n_startup_trials"), "type, seed"),
])
def test_unknown_key_lists_the_keys_of_its_section(tmp_path, path, allowed):
    changes = {("sampler",): {"type": "random"}} if path[0] == "sampler" else {}
    spec = changed_spec(tmp_path, {**changes, path: 1})
    with pytest.raises(SpecError, match=f": {'.'.join(path)}: unknown key \\(allowed: {allowed}\\)$"):
        load_study_spec(spec)


def test_bare_and_empty_keys_read_as_absent(tmp_path):
    spec = load_study_spec(changed_spec(tmp_path, {
        ("fixed",): None, ("enqueue",): None, ("timeout",): None, ("objective",): {"direction": "maximize"},
        SS + ("kl_anneal_cycle", "step"): None, SS + ("kl_anneal_cycle", "when"): {}}))
    assert (spec.fixed, spec.enqueue, spec.timeout, spec.direction) == ({}, (), None, "maximize")
    cycle = spec.search_space["kl_anneal_cycle"]
    assert (cycle.step, cycle.when) == (None, {}) and cycle.active({})


def test_a_condition_on_a_numeric_parameter(tmp_path):
    ratio = {**RATIO_ON_CYCLE, "when": {"kl_anneal_cycle": [2, 3]}}
    spec = load_study_spec(changed_spec(tmp_path, {SS + ("kl_anneal_ratio",): ratio, ("enqueue",): DELETE}))
    ratio = spec.search_space["kl_anneal_ratio"]
    assert ratio.when == {"kl_anneal_cycle": (2, 3)}
    assert ratio.active({"kl_anneal_cycle": 3}) and not ratio.active({"kl_anneal_cycle": 4})


def test_values_that_are_right_only_together_are_accepted(tmp_path):
    spec = load_study_spec(changed_spec(tmp_path, {("fixed", "first_pose"): True, ("fixed", "first_frame"): True}))
    assert spec.fixed == {"batch_size": 2, "first_pose": True, "first_frame": True}


def test_a_value_right_only_under_its_condition_is_accepted(tmp_path):
    """appearance_colours needs appearance_attention: searched under `when: {appearance_attention: [true]}`,
    every trial that can hold it is valid, and the check tries it in such a trial."""
    spec = load_study_spec(changed_spec(tmp_path, {
        SS + ("appearance_attention",): {"type": "categorical", "choices": [False, True]},
        SS + ("appearance_colours",): {"type": "categorical", "choices": [False, True],
                                       "when": {"appearance_attention": [True]}}}))
    colours = spec.search_space["appearance_colours"]
    assert colours.active({"appearance_attention": True}) and not colours.active({"appearance_attention": False})


def test_only_the_options_a_spec_sets_reach_optuna(tmp_path):
    spec = load_study_spec(changed_spec(tmp_path, {("pruner",): {"type": "threshold", "upper": 3}}))
    assert spec.pruner == {"type": "threshold", "upper": 3.0}
    assert make_pruner(spec)._lower == -math.inf  # Optuna's own default for the missing bound
