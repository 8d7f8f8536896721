"""A study's parent run says where the study stands: KILLED, with what remains, once the last worker has
left it unfinished; RUNNING again when a worker takes it up; FINISHED when it holds its target."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from harness.store.locations import resolve_stores
from harness.store.tracking import STOPPED_TAG, StudyTracker
from harness.worker.sweep import leave_unfinished


@pytest.fixture
def tracker(runs_dir) -> StudyTracker:
    tracker = StudyTracker(resolve_stores(runs_dir), "halted")
    tracker.study_started("name: halted\n", "a study stopped half-way")
    return tracker


@pytest.fixture
def study(runs_dir) -> optuna.Study:
    study = optuna.create_study(study_name="halted", storage=resolve_stores(runs_dir).storage_url,
                                direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=20.0))
    study.enqueue_trial({})
    return study


def parent(tracker: StudyTracker):
    return tracker.client.get_run(tracker.parent_run_id)


def test_the_last_worker_to_leave_marks_the_study_stopped_and_the_next_resumes_it(tracker, study):
    leave_unfinished(tracker, study, target=3, why="interrupted by SIGTERM")
    stopped = parent(tracker)
    assert stopped.info.status == "KILLED"
    assert stopped.data.tags[STOPPED_TAG] == ("stopped (interrupted by SIGTERM): 2 of 3 trials still to run, 1 of them "
                                              "queued; harness sweep --study halted continues it")
    tracker.study_resumed()
    resumed = parent(tracker)
    assert resumed.info.status == "RUNNING" and STOPPED_TAG not in resumed.data.tags
    tracker.study_finished(best_trial=0)
    assert parent(tracker).info.status == "FINISHED"


def test_a_worker_that_leaves_while_another_trains_leaves_the_study_running(tracker, study):
    running = study.ask()
    assert running.number == 1 and study.get_trials()[1].state == TrialState.RUNNING
    leave_unfinished(tracker, study, target=3, why="the timeout of 60 s ran out")
    assert parent(tracker).info.status == "RUNNING" and STOPPED_TAG not in parent(tracker).data.tags
