"""Study specs: the shipped YAML files, suggestion of (conditional) parameters, samplers, pruners, and errors."""
import dataclasses
import itertools
import warnings
from pathlib import Path

import optuna
import pytest

from harness.spec import (
    BUDGET_KEYS, ParamSpec, SpecError, StudySpec, available_studies, load_study_spec, studies_dir, train_values,
)
from harness.worker.search import make_pruner, make_sampler, suggest_params
from models.config import TrainConfig
from models.schedules import teacher_forcing_ratio
from spec_helpers import DELETE, base_spec, changed_spec, write_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

SHIPPED = ("cpu_recipe", "full", "kl_schedules", "kl_schedules_cpu", "loss_weighting", "smoke", "teacher_forcing")
RESEARCH = ("full", "kl_schedules", "loss_weighting", "teacher_forcing")


@pytest.fixture(autouse=True)
def shipped_studies_dir(monkeypatch):
    monkeypatch.delenv("HARNESS_STUDIES_DIR", raising=False)


def new_study(spec: StudySpec, seed: int | None = None) -> optuna.Study:
    return optuna.create_study(direction=spec.direction, sampler=make_sampler(spec, seed), pruner=make_pruner(spec))


# -- the shipped studies --------------------------------------------------------------------------


def test_shipped_studies_are_available():
    assert studies_dir() == Path(__file__).resolve().parents[3] / "studies"
    assert available_studies() == list(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spec_loads_and_builds_configs(name):
    spec = load_study_spec(name)
    assert spec.name == name and spec.path == studies_dir() / f"{name}.yaml"
    assert (spec.metric, spec.direction) == ("val_psnr", "maximize")
    assert spec.data is None and spec.enqueue and spec.retries == 2
    assert set(spec.budget) <= set(BUDGET_KEYS)
    for trial in spec.enqueue:
        TrainConfig.from_dict(train_values(spec, trial))


@pytest.mark.parametrize("name", RESEARCH)
def test_research_study_reference_trial_is_the_lab_default(name):
    """The first enqueued trial, with the fixed values, is TrainConfig's default apart from the budget."""
    spec = load_study_spec(name)
    reference = TrainConfig.from_dict(train_values(spec, spec.enqueue[0]))
    default = TrainConfig().to_dict()
    differing = {key for key, value in reference.to_dict().items() if value != default[key]}
    assert differing <= set(BUDGET_KEYS)
    assert spec.budget == {"epochs": 30, "partial": 1.0, "val_epoch_len": 60, "val_vi_len": 630}
    assert spec.fixed["batch_size"] == 2 and spec.fixed["baselines"] is True   # drawn beside every model
    assert not set(spec.fixed) & set(spec.search_space)


def test_seed_teacher_forcing_reaches_zero_by_epoch_19():
    trial = load_study_spec("teacher_forcing").enqueue[1]
    ratios = [teacher_forcing_ratio(e, trial["tfr"], trial["tfr_sde"], trial["tfr_d_step"]) for e in range(30)]
    assert ratios[17] > 0 and ratios[18] == pytest.approx(0)  # epoch 18 (0-based) is the 19th


def test_kl_type_names_stay_strings():
    """Unquoted `None` in YAML is the string the schedules want, not a null."""
    choices = load_study_spec("kl_schedules").search_space["kl_anneal_type"].choices
    assert choices == ("None", "Monotonic", "Cyclical", "Sigmoid")


@pytest.mark.parametrize("name", SHIPPED)
def test_enqueued_trials_come_back_unchanged(name):
    spec = load_study_spec(name)
    study = new_study(spec)
    for trial in spec.enqueue:
        study.enqueue_trial(trial)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when an enqueued value lies outside its distribution
        for expected in spec.enqueue:
            params = suggest_params(study.ask(), spec)
            assert {k: params[k] for k in expected} == expected


# -- suggesting parameters ------------------------------------------------------------------------


@pytest.mark.parametrize("kl_type, present", [
    ("None", set()), ("Monotonic", {"kl_anneal_ratio"}), ("Sigmoid", {"kl_anneal_ratio"}),
    ("Cyclical", {"kl_anneal_cycle", "kl_anneal_ratio"}),
])
def test_conditional_params_only_when_condition_holds(kl_type, present):
    spec = load_study_spec("kl_schedules")
    study = new_study(spec)
    study.enqueue_trial({"kl_anneal_type": kl_type})
    trial = study.ask()
    params = suggest_params(trial, spec)
    assert params == trial.params
    assert set(params) == {"kl_anneal_type"} | present and params["kl_anneal_type"] == kl_type
    assert suggest_params(optuna.trial.FixedTrial({"kl_anneal_type": kl_type, "kl_anneal_cycle": 3,
                                                   "kl_anneal_ratio": 0.5}), spec).keys() == params.keys()


@pytest.mark.parametrize("name", SHIPPED)
def test_suggested_values_lie_in_their_ranges(name):
    spec = load_study_spec(name)
    study = new_study(spec)
    for _ in range(20):
        trial = study.ask()
        params = suggest_params(trial, spec)
        for key, value in params.items():
            assert spec.search_space[key].contains(value)
            assert spec.search_space[key].active(params)
        for key, p in spec.search_space.items():
            assert (key in params) == p.active(params)
            if key in params and p.kind != "categorical":
                assert trial.distributions[key].log == p.log
        TrainConfig.from_dict(train_values(spec, params))
        study.tell(trial, 20.0)


def test_grid_enumerates_its_grid(tmp_path):
    raw = base_spec()
    raw["search_space"] = {
        "kl_anneal_type": {"type": "categorical", "choices": ["Monotonic", "Cyclical"]},
        "kl_anneal_cycle": {"type": "int", "low": 1, "high": 5, "step": 2},
        "kl_anneal_ratio": {"type": "float", "low": 0.1, "high": 0.3, "step": 0.1},
    }
    raw["sampler"] = {"type": "grid", "seed": 3}
    raw["enqueue"] = [{"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 1, "kl_anneal_ratio": 0.2}]
    spec = load_study_spec(write_spec(tmp_path, raw))
    study = new_study(spec)
    assert isinstance(study.sampler, optuna.samplers.GridSampler)
    seen = []
    study.optimize(lambda trial: seen.append(tuple(suggest_params(trial, spec).values())) or 0.0, n_trials=50)
    # no enqueue here: the grid stops the study once every point has been visited
    assert sorted(seen) == sorted(itertools.product(["Monotonic", "Cyclical"], [1, 3, 5], [0.1, 0.2, 0.3]))


# -- samplers and pruners -------------------------------------------------------------------------


def first_suggestions(spec: StudySpec, seed: int | None = None) -> list[dict]:
    study = new_study(spec, seed)
    return [suggest_params(study.ask(), spec) for _ in range(3)]


@pytest.mark.parametrize("name", ["smoke", "kl_schedules"])
def test_sampler_seed_reproduces_and_override_changes(name):
    spec = load_study_spec(name)
    assert first_suggestions(spec) == first_suggestions(spec)
    assert first_suggestions(spec, seed=1) == first_suggestions(spec, seed=1) != first_suggestions(spec)
    respecified = dataclasses.replace(spec, sampler={**spec.sampler, "seed": 1})
    assert first_suggestions(respecified) == first_suggestions(spec, seed=1)


def test_samplers_and_pruners_of_shipped_studies():
    # Optuna exposes no public getters; these private attributes are the constructor arguments.
    smoke, kl, full = (load_study_spec(n) for n in ("smoke", "kl_schedules", "full"))
    assert isinstance(make_sampler(smoke).for_seed(0), optuna.samplers.RandomSampler)
    tpe = make_sampler(kl).for_seed(0)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert (tpe._multivariate, tpe._group, tpe._n_startup_trials) == (False, False, 10)
    tpe = make_sampler(full).for_seed(0)
    assert (tpe._multivariate, tpe._group, tpe._n_startup_trials) == (True, True, 20)
    median = make_pruner(kl)
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert (median._n_startup_trials, median._n_warmup_steps) == (4, 5)
    hyperband = make_pruner(full)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert (hyperband._min_resource, hyperband._max_resource, hyperband._reduction_factor) == (3, "auto", 3)


@pytest.mark.parametrize("pruner, cls, attributes", [
    ({"type": "none"}, optuna.pruners.NopPruner, {}),
    ({"type": "threshold", "lower": 15, "n_warmup_steps": 2}, optuna.pruners.ThresholdPruner,
     {"_lower": 15.0, "_upper": float("inf"), "_n_warmup_steps": 2}),
    ({"type": "hyperband", "max_resource": 30}, optuna.pruners.HyperbandPruner, {"_max_resource": 30}),
    ({"type": "median", "interval_steps": 2}, optuna.pruners.MedianPruner, {"_interval_steps": 2}),
])
def test_pruner_options_are_passed(tmp_path, pruner, cls, attributes):
    spec = load_study_spec(write_spec(tmp_path, {**base_spec(), "pruner": pruner}))
    made = make_pruner(spec)
    assert isinstance(made, cls)
    assert {k: getattr(made, k) for k in attributes} == attributes


def test_defaults_of_optional_keys(tmp_path):
    raw = {k: v for k, v in base_spec().items() if k in ("name", "n_trials", "budget", "search_space")}
    spec = load_study_spec(write_spec(tmp_path, raw))
    assert (spec.metric, spec.direction, spec.timeout, spec.description) == ("val_psnr", "maximize", None, "")
    assert (spec.data, spec.fixed, spec.enqueue, spec.retries) == (None, {}, (), 2)
    assert spec.sampler == {"type": "tpe", "seed": 0} and spec.pruner == {"type": "median"}
    assert isinstance(make_sampler(spec).for_seed(0), optuna.samplers.TPESampler)
    assert isinstance(make_pruner(spec), optuna.pruners.MedianPruner)


def test_values_are_read_as_written(tmp_path):
    raw = {**base_spec(), "data": "/data/lab", "timeout": 3600, "retries": 0}
    raw["search_space"]["kl_anneal_cycle"]["when"] = {"kl_anneal_type": "Cyclical"}  # a scalar condition
    raw["search_space"]["lr"]["high"] = 1
    raw["enqueue"].append({"kl_anneal_type": "None", "lr": 1})  # an int for a float
    spec = load_study_spec(write_spec(tmp_path, raw))
    assert (spec.data, spec.timeout, spec.retries) == ("/data/lab", 3600.0, 0)
    assert list(spec.search_space) == ["kl_anneal_type", "kl_anneal_cycle", "lr"]
    assert spec.search_space["kl_anneal_cycle"] == ParamSpec("kl_anneal_cycle", "int", low=1, high=10,
                                                            when={"kl_anneal_type": ("Cyclical",)})
    assert spec.enqueue[1] == {"kl_anneal_type": "None", "lr": 1.0} and isinstance(spec.enqueue[1]["lr"], float)
    assert train_values(spec, {"lr": 0.002}) == {"batch_size": 2, "epochs": 2, "val_vi_len": 32, "lr": 0.002}


def test_param_contains():
    stepped = ParamSpec("kl_anneal_ratio", "float", low=0.1, high=0.5, step=0.1)
    assert stepped.contains(0.3) and stepped.contains(0.5) and not stepped.contains(0.35)
    assert not stepped.contains(0.6) and not stepped.contains(True) and not stepped.contains("0.3")
    integer = ParamSpec("tfr_sde", "int", low=0, high=25)
    assert integer.contains(25) and not integer.contains(3.0) and not integer.contains(False)
    assert ParamSpec("baselines", "categorical", choices=(True, False)).contains(True)
    assert not ParamSpec("n", "categorical", choices=(1, 2)).contains(True)


# -- bad specs ------------------------------------------------------------------------------------

GRID = {"type": "grid"}
FLAT_SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1e-2}}
BAD_SPECS = [
    # (id, {path: value}, the key the message must name)
    ("unknown-top-key", {("bogus",): 1}, "bogus"),
    ("missing-n_trials", {("n_trials",): DELETE}, "n_trials"),
    ("missing-search_space", {("search_space",): DELETE}, "search_space"),
    ("n_trials-zero", {("n_trials",): 0}, "n_trials"),
    ("n_trials-bool", {("n_trials",): True}, "n_trials"),
    ("n_trials-string", {("n_trials",): "4"}, "n_trials"),
    ("name-bad", {("name",): "a b"}, "name"),
    ("description-not-string", {("description",): ["x"]}, "description"),
    ("timeout-negative", {("timeout",): -1}, "timeout"),
    ("retries-negative", {("retries",): -1}, "retries"),
    ("data-not-string", {("data",): 3}, "data"),
    ("objective-unknown-key", {("objective",): {"metric": "val_psnr", "goal": 1}}, "objective.goal"),
    ("objective-metric", {("objective",): {"metric": "val_loss"}}, "objective.metric"),
    ("objective-direction", {("objective",): {"direction": "minimize"}}, "objective.direction"),
    ("budget-not-mapping", {("budget",): [1]}, "budget"),
    ("budget-unknown-key", {("budget", "lr"): 0.1}, "budget.lr"),
    ("fixed-unknown-key", {("fixed", "bogus"): 1}, "fixed.bogus"),
    ("fixed-device", {("fixed", "device"): "cpu"}, "fixed.device"),
    ("fixed-data", {("fixed", "data"): "x"}, "fixed.data"),
    ("fixed-budget-key", {("fixed", "epochs"): 3}, "fixed.epochs"),
    ("search-space-empty", {("search_space",): {}}, "search_space"),
    ("search-space-unknown-field", {("search_space", "bogus"): {"type": "int", "low": 1, "high": 2}},
     "search_space.bogus"),
    ("search-space-loss-convention", {("search_space", "loss_convention"): {"type": "categorical", "choices": ["a"]}},
     "search_space.loss_convention"),
    ("param-not-mapping", {("search_space", "lr"): 0.1}, "search_space.lr"),
    ("param-unknown-key", {("search_space", "lr", "lo"): 1}, "search_space.lr.lo"),
    ("param-unknown-type", {("search_space", "lr", "type"): "loguniform"}, "search_space.lr.type"),
    ("param-missing-type", {("search_space", "lr", "type"): DELETE}, "search_space.lr.type"),
    ("param-missing-high", {("search_space", "lr", "high"): DELETE}, "search_space.lr.high"),
    ("int-with-choices", {("search_space", "kl_anneal_cycle", "choices"): [1]}, "search_space.kl_anneal_cycle.choices"),
    ("categorical-with-low", {("search_space", "kl_anneal_type", "low"): 1}, "search_space.kl_anneal_type.low"),
    ("float-low-string", {("search_space", "lr", "low"): "1e-4"}, "search_space.lr.low"),
    ("int-low-float", {("search_space", "kl_anneal_cycle", "low"): 1.5}, "search_space.kl_anneal_cycle.low"),
    ("int-high-bool", {("search_space", "kl_anneal_cycle", "high"): True}, "search_space.kl_anneal_cycle.high"),
    ("log-not-bool", {("search_space", "lr", "log"): "yes"}, "search_space.lr.log"),
    ("empty-range", {("search_space", "lr", "low"): 0.1}, "search_space.lr.low"),
    ("empty-int-range", {("search_space", "kl_anneal_cycle", "high"): 1}, "search_space.kl_anneal_cycle.low"),
    ("empty-choices", {("search_space", "kl_anneal_type", "choices"): []}, "search_space.kl_anneal_type.choices"),
    ("choices-not-list", {("search_space", "kl_anneal_type", "choices"): "None"},
     "search_space.kl_anneal_type.choices"),
    ("choice-not-scalar", {("search_space", "kl_anneal_type", "choices"): [[1]]},
     "search_space.kl_anneal_type.choices"),
    ("log-low-zero", {("search_space", "lr", "low"): 0}, "search_space.lr.low"),
    ("step-zero", {("search_space", "kl_anneal_cycle", "step"): 0}, "search_space.kl_anneal_cycle.step"),
    ("step-negative", {("search_space", "lr", "log"): False, ("search_space", "lr", "step"): -0.1},
     "search_space.lr.step"),
    ("step-with-log", {("search_space", "lr", "step"): 0.001}, "search_space.lr.step"),
    ("when-unknown-param", {("search_space", "kl_anneal_cycle", "when"): {"bogus": [1]}},
     "search_space.kl_anneal_cycle.when.bogus"),
    ("when-later-param", {("search_space", "kl_anneal_cycle", "when"): {"lr": [0.001]}},
     "search_space.kl_anneal_cycle.when.lr"),
    ("when-bad-value", {("search_space", "kl_anneal_cycle", "when"): {"kl_anneal_type": ["Bogus"]}},
     "search_space.kl_anneal_cycle.when.kl_anneal_type"),
    ("when-empty-list", {("search_space", "kl_anneal_cycle", "when"): {"kl_anneal_type": []}},
     "search_space.kl_anneal_cycle.when.kl_anneal_type"),
    ("when-not-mapping", {("search_space", "kl_anneal_cycle", "when"): ["kl_anneal_type"]},
     "search_space.kl_anneal_cycle.when"),
    ("fixed-and-searched", {("fixed", "lr"): 0.001}, "search_space.lr"),
    ("budget-and-searched", {("budget", "epochs"): DELETE, ("budget", "partial"): 0.5,
                             ("search_space", "partial"): {"type": "float", "low": 0.1, "high": 1.0}},
     "search_space.partial"),
    ("sampler-unknown-type", {("sampler",): {"type": "cmaes"}}, "sampler.type"),
    ("sampler-missing-type", {("sampler",): {"seed": 1}}, "sampler.type"),
    ("sampler-unknown-option", {("sampler",): {"type": "random", "n_startup_trials": 3}},
     "sampler.n_startup_trials"),
    ("sampler-seed-negative", {("sampler",): {"type": "tpe", "seed": -1}}, "sampler.seed"),
    ("sampler-seed-float", {("sampler",): {"type": "random", "seed": 1.5}}, "sampler.seed"),
    ("sampler-multivariate-not-bool", {("sampler",): {"type": "tpe", "multivariate": 1}}, "sampler.multivariate"),
    ("pruner-unknown-type", {("pruner",): {"type": "successive_halving"}}, "pruner.type"),
    ("pruner-option-of-other-type", {("pruner",): {"type": "hyperband", "n_warmup_steps": 3}},
     "pruner.n_warmup_steps"),
    ("pruner-none-with-option", {("pruner",): {"type": "none", "n_startup_trials": 3}}, "pruner.n_startup_trials"),
    ("median-interval-zero", {("pruner",): {"type": "median", "interval_steps": 0}}, "pruner.interval_steps"),
    ("hyperband-max-resource", {("pruner",): {"type": "hyperband", "max_resource": "max"}}, "pruner.max_resource"),
    ("hyperband-reduction-factor", {("pruner",): {"type": "hyperband", "reduction_factor": 1}},
     "pruner.reduction_factor"),
    ("threshold-without-bounds", {("pruner",): {"type": "threshold", "n_warmup_steps": 1}}, "pruner.lower"),
    ("threshold-lower-above-upper", {("pruner",): {"type": "threshold", "lower": 30, "upper": 20}}, "pruner.lower"),
    ("threshold-lower-string", {("pruner",): {"type": "threshold", "lower": "15"}}, "pruner.lower"),
    ("grid-conditional", {("sampler",): GRID}, "search_space.kl_anneal_cycle.when"),
    ("grid-float-without-step", {("sampler",): GRID, ("search_space",): FLAT_SPACE, ("enqueue",): DELETE},
     "search_space.lr.step"),
    ("grid-enqueue-incomplete", {("sampler",): GRID, ("enqueue",): [{"kl_anneal_type": "None"}],
                                 ("search_space", "kl_anneal_cycle", "when"): DELETE,
                                 ("search_space", "lr"): {"type": "float", "low": 0.001, "high": 0.003, "step": 0.001}},
     "enqueue.0"),
    ("enqueue-not-list", {("enqueue",): {"lr": 0.001}}, "enqueue"),
    ("enqueue-empty-trial", {("enqueue",): [{}]}, "enqueue.0"),
    ("enqueue-unknown-param", {("enqueue",): [{"batch_size": 4}]}, "enqueue.0.batch_size"),
    ("enqueue-out-of-range", {("enqueue", 0, "lr"): 1.0}, "enqueue.0.lr"),
    ("enqueue-bad-choice", {("enqueue", 0, "kl_anneal_type"): "Sigmoid"}, "enqueue.0.kl_anneal_type"),
    ("enqueue-int-as-float", {("enqueue", 0, "kl_anneal_cycle"): 10.0}, "enqueue.0.kl_anneal_cycle"),
    ("enqueue-condition-false", {("enqueue", 0, "kl_anneal_type"): "None"}, "enqueue.0.kl_anneal_cycle"),
    ("enqueue-condition-unset", {("enqueue", 0, "kl_anneal_type"): DELETE}, "enqueue.0.kl_anneal_cycle"),
    ("config-rejects-fixed", {("fixed", "batch_size"): 0}, "fixed.batch_size"),
    ("config-rejects-fixed-type", {("fixed", "batch_size"): "2"}, "fixed.batch_size"),
    ("config-rejects-budget", {("budget", "partial"): 2.0}, "budget.partial"),
    ("config-rejects-combination", {("budget", "val_epoch_len"): 64}, "budget.val_epoch_len"),
    ("config-rejects-low", {("search_space", "kl_anneal_cycle", "low"): 0}, "search_space.kl_anneal_cycle"),
    ("config-rejects-choice", {("search_space", "kl_anneal_type", "choices"): ["None", "Cyclical", "Linear"]},
     "search_space.kl_anneal_type"),
    ("config-rejects-type", {("search_space", "kl_anneal_cycle"): {"type": "float", "low": 1, "high": 10}},
     "search_space.kl_anneal_cycle"),
]


@pytest.mark.parametrize("changes, key", [case[1:] for case in BAD_SPECS], ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_names_file_and_key(tmp_path, changes, key):
    path = changed_spec(tmp_path, changes)
    with pytest.raises(SpecError) as info:
        load_study_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: "), message


@pytest.mark.parametrize("text, contains", [
    ("name: [unclosed\n", "not valid YAML"),
    ("- name: t\n", "top level"),
    ("", "top level"),
])
def test_unparsable_spec_names_file(tmp_path, text, contains):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_study_spec(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{path}: ") and contains in str(info.value)


def test_unreadable_spec_names_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SpecError, match="cannot read") as info:
        load_study_spec(path)
    assert str(info.value).startswith(f"{path}: ")


def test_unknown_study_lists_available_names():
    with pytest.raises(SpecError) as info:
        load_study_spec("kl_schedule")
    message = str(info.value)
    assert message.startswith("kl_schedule: unknown study") and "\n" not in message
    assert message.endswith("available: " + ", ".join(SHIPPED))


def test_missing_spec_file_is_not_looked_up_by_name(tmp_path):
    with pytest.raises(SpecError, match="no such file$"):
        load_study_spec(tmp_path / "kl_schedules.yaml")


def test_studies_dir_from_environment(tmp_path, monkeypatch):
    write_spec(tmp_path, base_spec(), name="mine")
    monkeypatch.setenv("HARNESS_STUDIES_DIR", str(tmp_path))
    assert studies_dir() == tmp_path and available_studies() == ["mine"]
    assert load_study_spec("mine").name == "t"  # the name inside the file need not match its stem
    with pytest.raises(SpecError, match="available: mine$"):
        load_study_spec("smoke")


# -- never the same point twice by accident ------------------------------------------------------------


def sampled_params(study: optuna.Study) -> list[dict]:
    return [t.params for t in study.get_trials() if "fixed_params" not in t.system_attrs]


def run_trials(study: optuna.Study, spec: StudySpec, count: int) -> None:
    for _ in range(count):
        trial = study.ask()
        suggest_params(trial, spec)
        study.tell(trial, 1.0)


@pytest.mark.parametrize("name", ["smoke", "kl_schedules"])
def test_reruns_and_parallel_workers_sample_new_points(name, tmp_path):
    spec = load_study_spec(name)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = optuna.create_study(storage=storage, study_name=name, sampler=make_sampler(spec),
                                direction="maximize")
    for params in spec.enqueue:
        first.enqueue_trial(params)
    run_trials(first, spec, len(spec.enqueue) + 3)
    # Two workers that load the study with the same spec seed, taking turns, then a rerun.
    workers = [optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(spec)) for _ in range(2)]
    for _ in range(3):
        for worker in workers:
            run_trials(worker, spec, 1)
    rerun = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(spec))
    run_trials(rerun, spec, 3)
    sampled = sampled_params(rerun)
    assert len(sampled) == 12
    # kl_schedules' None has no other parameter: its only point can come up twice, any other may not.
    distinct = [p for p in sampled if p != {"kl_anneal_type": "None"}]
    assert len({tuple(sorted(p.items())) for p in distinct}) == len(distinct)


def test_one_worker_from_scratch_is_reproducible(tmp_path):
    spec = load_study_spec("smoke")

    def fresh(path: Path) -> list[dict]:
        study = optuna.create_study(storage=f"sqlite:///{path}", study_name="s", sampler=make_sampler(spec))
        run_trials(study, spec, 4)
        return sampled_params(study)

    assert fresh(tmp_path / "a.db") == fresh(tmp_path / "b.db")
    assert fresh(tmp_path / "c.db") != [suggest_params(new_study(spec, seed=5).ask(), spec) for _ in range(4)]
