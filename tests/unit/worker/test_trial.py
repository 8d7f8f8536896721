"""A Trial's state transitions, in process, with a SQLite Optuna storage and a local MLflow store."""
from __future__ import annotations

import signal

import optuna
import pytest
from optuna.trial import TrialState

from harness.store.locations import resolve_stores
from harness.store.optuna_storage import open_storage
from harness.store.tracking import STATE_TAG, StudyTracker
from harness.outputs.names import ERROR_FILE
from harness.worker.signals import StopRequested
from harness.worker.trial import StudyParts, Trial

CONFIG = {"lr": 0.002, "loss_convention": "lab"}


@pytest.fixture
def requeued() -> list[int]:
    """The trials queued again (by an interrupted Trial), in order."""
    return []


@pytest.fixture
def study_parts(runs_dir, requeued) -> StudyParts:
    stores = resolve_stores(runs_dir)
    storage = open_storage(stores, on_stale=lambda study, trial: None)   # with heartbeats, as a worker
    study = optuna.create_study(storage=storage, study_name="owned", direction="maximize")
    return StudyParts(study, storage, StudyTracker(stores, "owned"), stores,
                      requeue=lambda study, trial: requeued.append(trial.number))


def owner_of(study_parts: StudyParts) -> Trial:
    return Trial.ask(study_parts)


def ended(study_parts: StudyParts, owner: Trial) -> tuple[optuna.trial.FrozenTrial, object]:
    trial = next(t for t in study_parts.study.get_trials() if t.number == owner.number)
    return trial, study_parts.tracker.client.get_run(owner.run_id)


def test_a_completed_trial_ends_complete_in_both_stores_with_its_value(study_parts):
    with owner_of(study_parts) as owner:
        owner.start(CONFIG, ["lr"], [0])
        owner.report(0, 20.5)
        owner.complete(21.0)
    trial, run = ended(study_parts, owner)
    assert trial.state == TrialState.COMPLETE and trial.value == 21.0 and trial.intermediate_values == {0: 20.5}
    assert trial.user_attrs["mlflow_run_id"] == owner.run_id and trial.user_attrs["seeds"] == [0]
    assert run.info.status == "FINISHED" and run.data.tags[STATE_TAG] == "COMPLETE"
    assert not owner.heartbeat._thread.is_alive()


def test_a_pruned_trial_ends_pruned_in_both_stores_with_the_reason(study_parts):
    with owner_of(study_parts) as owner:
        owner.start(CONFIG, ["lr"], [0])
        owner.report(0, 12.0)
        owner.prune("pruned after epoch 1 at 12.00 dB")
    trial, run = ended(study_parts, owner)
    assert trial.state == TrialState.PRUNED
    assert run.info.status == "KILLED" and run.data.tags["harness.message"] == "pruned after epoch 1 at 12.00 dB"


def test_an_error_in_a_trial_is_its_failure_with_the_traceback_kept_and_the_worker_goes_on(study_parts, requeued):
    with owner_of(study_parts) as owner:
        owner.start(CONFIG, ["lr"], [0])
        raise ZeroDivisionError("a bug in a callback")
    trial, run = ended(study_parts, owner)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "ZeroDivisionError('a bug in a callback')"
    assert "ZeroDivisionError: a bug in a callback" in (owner.trial_dir / ERROR_FILE).read_text()
    assert run.info.status == "FAILED" and run.data.tags[STATE_TAG] == "FAIL"
    assert requeued == []       # a failure is not retried by this worker


def test_ctrl_c_fails_the_trial_as_interrupted_and_stops_the_worker(study_parts, requeued):
    with pytest.raises(KeyboardInterrupt):
        with owner_of(study_parts) as owner:
            owner.start(CONFIG, ["lr"], [0])
            raise KeyboardInterrupt
    trial, run = ended(study_parts, owner)
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == "interrupted"
    assert run.info.status == "FAILED" and run.data.tags["harness.message"] == "interrupted"
    assert requeued == [owner.number]     # queued again, to resume from its checkpoint


def test_a_stop_signal_fails_the_trial_with_the_signal_named_and_stops_the_worker(study_parts, requeued):
    with pytest.raises(StopRequested):
        with owner_of(study_parts) as owner:
            owner.start(CONFIG, ["lr"], [0])
            raise StopRequested(signal.SIGTERM)
    trial, run = ended(study_parts, owner)
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == "interrupted by SIGTERM"
    assert run.info.status == "FAILED" and run.data.tags["harness.message"] == "interrupted by SIGTERM"
    assert requeued == [owner.number]


def test_a_trial_ends_once(study_parts):
    with owner_of(study_parts) as owner:
        owner.start(CONFIG, ["lr"], [0])
        owner.complete(21.0)
        with pytest.raises(RuntimeError, match="already ended COMPLETE"):
            owner.prune("late")
    trial, _ = ended(study_parts, owner)
    assert trial.state == TrialState.COMPLETE


def test_leaving_without_an_outcome_is_a_bug_not_a_result(study_parts):
    with pytest.raises(RuntimeError, match="without an outcome"):
        with owner_of(study_parts) as owner:
            owner.start(CONFIG, ["lr"], [0])


def test_a_sampled_repeat_is_not_trained_and_names_the_earlier_trial(study_parts):
    with owner_of(study_parts) as owner:
        owner.skip_repeat(of=3)
    trial = study_parts.study.get_trials()[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["repeat_of"] == 3 and owner.run_id is None


def test_one_process_owns_several_trials_at_once(study_parts):
    # What packed training needs: owners share nothing, and each ends its own trial.
    first, second = owner_of(study_parts), owner_of(study_parts)
    with first, second:
        first.start(CONFIG, ["lr"], [0])
        second.start(CONFIG | {"lr": 0.004}, ["lr"], [0])
        second.report(0, 18.0)
        first.report(0, 19.0)
        second.prune("pruned")
        first.complete(22.0)
    (a, run_a), (b, run_b) = ended(study_parts, first), ended(study_parts, second)
    assert (a.state, a.value, a.intermediate_values) == (TrialState.COMPLETE, 22.0, {0: 19.0})
    assert (b.state, b.intermediate_values) == (TrialState.PRUNED, {0: 18.0})
    assert run_a.info.run_id != run_b.info.run_id and run_b.info.status == "KILLED"


def test_a_retry_starts_clean_and_reports_each_epoch_once(study_parts):
    study = study_parts.study
    with owner_of(study_parts) as owner:
        owner.start(CONFIG, ["lr"], [0])
        owner.report(0, 15.0)
        raise OSError("worker lost")
    failed = study.get_trials()[0]
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, failed)    # what a survivor does
    with owner_of(study_parts) as retry:
        assert retry.trial.user_attrs.get("fail_reason") is None    # the predecessor's outcome is not the retry's
        retry.start(CONFIG, ["lr"], [0])
        retry.report(0, 15.0)    # the epoch its checkpoint restored ...
        retry.report(0, 99.0)    # ... is reported once, whoever passes it on again
        retry.report(1, 16.0)
        retry.complete(17.0)
    trial, _ = ended(study_parts, retry)
    assert trial.number == 1 and trial.state == TrialState.COMPLETE
    assert trial.intermediate_values == {0: 15.0, 1: 16.0}
