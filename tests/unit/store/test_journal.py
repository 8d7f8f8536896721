"""Optuna's journal storage with heartbeats (harness/store/journal.py): a silent trial is failed once and
retried, as on the database storages."""
from __future__ import annotations

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from harness.store import journal as journal_storage
from harness.store.journal import HEARTBEAT_ATTR, HeartbeatJournalStorage
from harness.store.locations import journal_path, resolve_stores
from harness.store.optuna_storage import open_storage


def test_journal_urls_name_their_file(tmp_path):
    assert journal_path("journal:runs/study.log").as_posix() == "runs/study.log"
    assert journal_path("journal:///shared/study.log").as_posix() == "/shared/study.log"
    assert journal_path("sqlite:///x.db") is None
    (tmp_path / "s.log").touch()      # a reader opens an existing journal; it creates none
    storage = open_storage(resolve_stores(tmp_path, f"journal:{tmp_path}/s.log"))
    assert isinstance(storage, HeartbeatJournalStorage) and storage.get_heartbeat_interval() is None


def test_a_silent_trial_is_failed_once_and_retried(tmp_path, monkeypatch):
    path = tmp_path / "study.log"
    now = [1_000_000.0]
    monkeypatch.setattr(journal_storage.time, "time", lambda: now[0])
    stale_calls = []

    def on_stale(study, trial):
        stale_calls.append(trial.number)
        RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)

    # Two workers, each with its own storage object on the one file.
    workers = [HeartbeatJournalStorage(path, 1, 5, on_stale) for _ in range(2)]
    study_a = optuna.create_study(study_name="s", storage=workers[0])
    study_b = optuna.load_study(study_name="s", storage=workers[1])
    trial = study_a.ask()
    now[0] = trial.datetime_start.timestamp() + 1
    workers[0].record_heartbeat(trial._trial_id)
    now[0] += 4                           # 4 s after its heartbeat: alive
    fail_stale_trials(study_b)
    assert study_b.trials[0].state == TrialState.RUNNING and stale_calls == []
    now[0] += 2                           # 6 s: past the grace period
    fail_stale_trials(study_b)
    fail_stale_trials(study_a)            # the second worker to notice does nothing more
    states = [t.state for t in study_a.trials]
    assert states == [TrialState.FAIL, TrialState.WAITING] and stale_calls == [0]
    # The retry inherits the dead trial's last heartbeat: it counts from its own start, not from that.
    retry = study_a.ask()
    assert HEARTBEAT_ATTR in study_a.trials[1].system_attrs
    now[0] = retry.datetime_start.timestamp() + 3
    fail_stale_trials(study_b)
    assert study_b.trials[1].state == TrialState.RUNNING
    # A heartbeat sent after its trial ended (the thread's last beat) is dropped, not an error.
    study_a.tell(retry, 1.0)
    workers[0].record_heartbeat(retry._trial_id)
