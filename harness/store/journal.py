"""Optuna's journal storage on a file, with heartbeats: a study store for clusters that share a file
system but run no database server (`--storage journal:/shared/study.log`).

Optuna's `JournalStorage` records every write as one line appended to the file, under a lock that
works on network file systems (a symbolic link), but it keeps no heartbeats: a trial whose worker
died would stay RUNNING for ever. Here each heartbeat is a system attr of the trial (one line per
interval), and a RUNNING trial silent for the grace period is stale, as in `RDBStorage`: the
sweep's retry and no-repeat rules then work the same on both. Heartbeats carry the writer's clock:
the machines' clocks must agree to well within the grace period (NTP does that on any cluster).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
# Optuna's stale-trial machinery (fail_stale_trials) recognises a storage with heartbeats by this base.
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_ATTR = "harness:heartbeat"     # seconds since the epoch, from the worker's clock


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    def __init__(self, path: Path, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None):
        super().__init__(JournalFileBackend(str(path)))
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.on_stale = on_stale

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:    # ended meanwhile (by its owner, or failed by another worker)
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if self.grace_period is None:
            return []
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            # A retry inherits its predecessor's system attrs, its last heartbeat among them: it
            # counts from its own start.
            last_sign = max(float(trial.system_attrs.get(HEARTBEAT_ATTR, started)), started)
            if now - last_sign > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.on_stale
