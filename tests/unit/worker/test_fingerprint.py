"""Study fingerprints: studies stored by earlier code still continue (and are upgraded), a changed
spec is refused, and the fingerprint follows the spec's values, never a class's repr."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest
import yaml

from harness.spec.fingerprint import (CURRENT_VERSION, FINGERPRINT_ATTR, VERSION_ATTR, canonical_form, fingerprint_v1,
                                 spec_fingerprint, spec_matches)
from harness.store.locations import resolve_stores
from harness.store.optuna_storage import open_storage
from harness.spec import ParamSpec, StudySpec, load_study_spec
from harness.worker.search import suggest_params
from harness.worker.sweep import StudyMismatch, open_study

STORE = Path(__file__).resolve().parents[2] / "data" / "store-2026-12"
# open_study opens the storage as a worker does, with heartbeats; these tests ask and tell by hand.
pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")]
RECORDED_V1 = {"legacy": "3a0e88367bea29f6", "legacy_seeds": "dfe8be0d8e817024"}
PARAM_FIELDS = ("name", "kind", "choices", "low", "high", "step", "log", "when")
CHANGES = {    # one result-relevant change per section
    "budget": lambda raw: raw["budget"].update(epochs=3),
    "fixed": lambda raw: raw["fixed"].update(f_dim=32),
    "search range": lambda raw: raw["search_space"]["lr"].update(high=1.0e-2),
}


def open_copy(spec: StudySpec, runs: Path) -> optuna.Study:
    stores = resolve_stores(runs)
    # As a worker opens it (a reader creates no store): with heartbeats.
    return open_study(spec, stores, open_storage(stores, on_stale=lambda study, trial: None), seed=None)


def stored_spec(name: str) -> StudySpec:
    return load_study_spec(STORE / f"{name}.yaml")


def spec_with(tmp_path: Path, name: str, change=lambda raw: None, reorder: bool = False) -> StudySpec:
    """The stored spec `name`, changed by `change`; `reorder` writes every mapping's keys in reverse."""
    raw = yaml.safe_load((STORE / f"{name}.yaml").read_text())
    change(raw)
    if reorder:
        def reverse(value):
            return {k: reverse(v) for k, v in reversed(value.items())} if isinstance(value, dict) else value
        raw = reverse(raw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_study_spec(path)


def rebuilt(spec: StudySpec) -> StudySpec:
    """The same spec with every ParamSpec built anew from its attribute values."""
    space = {name: ParamSpec(**{f: getattr(p, f) for f in PARAM_FIELDS}) for name, p in spec.search_space.items()}
    return dataclasses.replace(spec, search_space=space)


# -- studies stored by earlier code ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RECORDED_V1))
def test_version_1_still_gives_the_recorded_fingerprints(name):
    assert fingerprint_v1(stored_spec(name)) == RECORDED_V1[name]


@pytest.mark.parametrize("name", sorted(RECORDED_V1))
def test_a_stored_study_continues_and_is_upgraded_to_the_current_version(legacy_runs, name):
    spec = stored_spec(name)
    study = open_copy(spec, legacy_runs)
    assert study.user_attrs[FINGERPRINT_ATTR] == spec_fingerprint(spec) != RECORDED_V1[name]
    assert study.user_attrs[VERSION_ATTR] == CURRENT_VERSION
    trial = study.ask()                 # continues: the queued reference trial comes first
    assert trial.number == 0 and suggest_params(trial, spec) == {"kl_anneal_type": "Cyclical", "lr": 0.002}
    study.tell(trial, 20.0)
    again = open_copy(stored_spec(name), legacy_runs)  # the upgraded record matches the spec too
    assert [t.state for t in again.get_trials()] == [optuna.trial.TrialState.COMPLETE]


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("upgraded", [False, True], ids=["v1 record", "current record"])
def test_a_changed_spec_is_refused(legacy_runs, tmp_path, change, upgraded):
    if upgraded:
        open_copy(stored_spec("legacy"), legacy_runs)
    with pytest.raises(StudyMismatch, match="different legacy.yaml"):
        open_copy(spec_with(tmp_path, "legacy", CHANGES[change]), legacy_runs)
    recorded = optuna.load_study(study_name="legacy", storage=resolve_stores(legacy_runs).storage_url).user_attrs
    assert recorded.get(VERSION_ATTR, 1) == (CURRENT_VERSION if upgraded else 1)   # a refusal records nothing


def test_a_record_of_an_unknown_version_is_refused(legacy_runs):
    study = optuna.load_study(study_name="legacy", storage=resolve_stores(legacy_runs).storage_url)
    study.set_user_attr(VERSION_ATTR, CURRENT_VERSION + 1)
    assert not spec_matches(study.user_attrs, stored_spec("legacy"))


def test_a_new_study_records_the_current_version(tmp_path):
    spec = stored_spec("legacy")
    study = open_copy(spec, tmp_path / "fresh")
    assert study.user_attrs[FINGERPRINT_ATTR] == spec_fingerprint(spec)
    assert study.user_attrs[VERSION_ATTR] == CURRENT_VERSION
    assert open_copy(rebuilt(spec), tmp_path / "fresh").study_name == "legacy"


# -- what the fingerprint depends on --------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RECORDED_V1))
def test_rebuilt_params_and_reordered_yaml_keep_the_fingerprint(tmp_path, name):
    spec = stored_spec(name)
    assert spec_fingerprint(rebuilt(spec)) == spec_fingerprint(spec)
    assert fingerprint_v1(rebuilt(spec)) == RECORDED_V1[name]
    assert spec_fingerprint(spec_with(tmp_path, name, reorder=True)) == spec_fingerprint(spec)


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_each_result_relevant_change_changes_the_fingerprint(tmp_path, change):
    assert spec_fingerprint(spec_with(tmp_path, "legacy", CHANGES[change])) != spec_fingerprint(stored_spec("legacy"))


def test_the_fingerprint_hashes_values_not_the_class_repr(monkeypatch):
    spec = stored_spec("legacy")
    before = spec_fingerprint(spec)
    monkeypatch.setattr(ParamSpec, "__repr__", lambda self: "ParamSpec(...)")
    assert spec_fingerprint(spec) == before
    assert fingerprint_v1(spec) == RECORDED_V1["legacy"]   # version 1 rebuilds the old repr from the values


def test_the_canonical_form_is_versioned_plain_json():
    form = canonical_form(stored_spec("legacy_seeds"))
    assert json.loads(json.dumps(form)) == form      # plain JSON values only: no tuples, no objects
    assert form["version"] == CURRENT_VERSION and form["seeds"] == 2 and form["data"] is None
    assert form["space"]["lr"] == {"name": "lr", "kind": "float", "choices": [], "low": 0.001, "high": 0.005,
                                   "step": None, "log": True, "when": {}}
    assert set(form) == {"version", "data", "budget", "fixed", "metric", "seeds", "space"}


def test_float_bounds_typed_as_ints_are_the_same_range():
    spec = stored_spec("legacy")
    lr = spec.search_space["lr"]
    as_int = {**spec.search_space, "lr": ParamSpec(**{f: getattr(lr, f) for f in PARAM_FIELDS} | {"low": 1, "high": 2})}
    as_float = {**spec.search_space, "lr": ParamSpec(**{f: getattr(lr, f) for f in PARAM_FIELDS}
                                                     | {"low": 1.0, "high": 2.0})}
    assert (spec_fingerprint(dataclasses.replace(spec, search_space=as_int))
            == spec_fingerprint(dataclasses.replace(spec, search_space=as_float)))
