"""One trial from ask to tell: its Optuna trial, its MLflow run, its folder and its outcome.

A worker asks the study for a trial, trains it, and tells the study how it ended; everything in
between that both stores must agree on goes through one `Trial`, so that a trial ends exactly once,
the same way in Optuna and in MLflow:

    with Trial(study_parts, ask(study)) as trial:    # heartbeats while it runs
        trial.start(config, searched, seeds)
        ...                                  # each epoch: trial.report(epoch, value)
        trial.complete(value)                # or trial.prune(message) / trial.fail(message)

Leaving the `with` block without an outcome is a failure (an exception: recorded, and the worker
goes on) or an interruption (Ctrl-C, a stop signal: recorded, the trial queued again, then re-raised).
A trial whose worker died is closed by the survivors through `close_lost_run`. Nothing here is shared
between trials, so one process can hold several at once (a packed worker).
"""
from __future__ import annotations

import os
import socket
import threading
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from harness.outputs.files import json_safe
from harness.outputs.names import (CANDIDATE_ATTR, CONFIRM_SEED_ATTR, CONFIRM_STAGE, CONFIRMS_ATTR, ERROR_FILE,
                                   STAGE_ATTR)
from harness.store.locations import Stores
from harness.store.tracking import StudyTracker

from .signals import StopRequested

# A retried trial starts with its predecessor's user attrs; these describe one attempt's outcome.
ATTEMPT_ATTRS = ("fail_reason", "resumed_from_trial", "resumed_epochs")


@dataclass(frozen=True)
class StudyParts:
    """What every trial of one study in this worker shares: the study, its storage (this worker's,
    with heartbeats), its MLflow side, where trial folders go, and what queues an interrupted trial
    again (the same handler that retries a dead worker's trial)."""
    study: optuna.Study
    storage: BaseStorage
    tracker: StudyTracker
    stores: Stores
    requeue: Callable[[optuna.Study, FrozenTrial], None]

    def trial_dir(self, number: int) -> Path:
        return self.stores.trial_dir(self.study.study_name, number)


class Heartbeat:
    """Records a running trial's heartbeat in the Optuna storage every interval, from a thread,
    so that other workers can tell a live trial from one whose worker died."""

    def __init__(self, storage: BaseStorage, trial_id: int):
        self.storage = storage
        self.trial_id = trial_id
        self.interval = storage.get_heartbeat_interval()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval is None:
            return
        self.storage.record_heartbeat(self.trial_id)   # at once: the grace period runs from here
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.trial_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.storage.record_heartbeat(self.trial_id)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def ask(study: optuna.Study) -> optuna.Trial:
    """The study's next trial: a queued one (reference, retry, confirmation) first, else a sampled one."""
    with warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for Study.optimize; a Trial sends them itself.
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        return study.ask()


class Trial:
    """The one place that starts, records and ends a trial in both stores (see the module's doc)."""

    def __init__(self, parts: StudyParts, trial: optuna.Trial):
        for key in ATTEMPT_ATTRS:
            if key in trial.user_attrs:
                trial.set_user_attr(key, None)
        self.parts = parts
        self.trial = trial
        self.trial_dir = parts.trial_dir(trial.number)
        study_id = parts.storage.get_study_id_from_name(parts.study.study_name)
        self.heartbeat = Heartbeat(parts.storage,
                                   parts.storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
        self.run_id: str | None = None
        self.state: TrialState | None = None     # set once, by the outcome
        self.finished: FrozenTrial | None = None
        self.folders: list[tuple[Path, str]] = []   # (folder, artifact prefix) logged if the trial fails

    @classmethod
    def ask(cls, parts: StudyParts) -> Trial:
        """The study's next trial, owned."""
        return cls(parts, ask(parts.study))

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def study(self) -> optuna.Study:
        return self.parts.study

    @property
    def confirmation(self) -> dict[str, Any] | None:
        """A confirmation training's candidate, the search trial it confirms and its seed; None in a search."""
        attrs = self.trial.user_attrs
        if attrs.get(STAGE_ATTR) != CONFIRM_STAGE:
            return None
        return {"candidate": attrs[CANDIDATE_ATTR], "confirms": attrs[CONFIRMS_ATTR], "seed": attrs[CONFIRM_SEED_ATTR]}

    def stored(self) -> FrozenTrial:
        """The trial as the storage holds it, with what a retry inherited (system attrs, earlier
        epochs' values) that `optuna.Trial` does not expose."""
        return self.parts.storage.get_trial(self.heartbeat.trial_id)

    # -- while it runs -------------------------------------------------------------------------
    def start(self, config: dict[str, Any], searched: list[str], seeds: list[int]) -> None:
        """Open the trial's MLflow run and note where its results live."""
        self.run_id = self.parts.tracker.start_trial(self.number, config, searched, self.confirmation)
        self.set_attrs({"mlflow_run_id": self.run_id, "trial_dir": str(self.trial_dir), "seeds": seeds,
                        "worker": f"{socket.gethostname()}:{os.getpid()}"})

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        for key, value in json_safe(attrs).items():
            self.trial.set_user_attr(key, value)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Tags of the trial's MLflow run."""
        self.parts.tracker.set_tags(self.run_id, tags)

    def record(self, facts: dict[str, float]) -> None:
        """Facts reports read from both stores: user attrs in Optuna, metrics in MLflow (NaN and inf,
        null in Optuna, are left out of MLflow)."""
        safe = json_safe(facts)
        for key, value in safe.items():
            self.trial.set_user_attr(key, value)
        self.log_metrics({k: v for k, v in safe.items() if v is not None})

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Metrics of the trial's MLflow run only (per-epoch means over seeds, final means)."""
        if self.run_id is not None:
            self.parts.tracker.log_metrics(self.run_id, metrics, step)

    def keep_files(self, folder: Path, prefix: str = "") -> None:
        """A folder whose results are logged to the run if the trial ends in an error."""
        self.folders.append((folder, prefix))

    def report(self, epoch: int, value: float) -> None:
        """An epoch's value, which the pruner compares across trials (once per epoch: a retry
        inherits the epochs its predecessor reported)."""
        if epoch not in self.stored().intermediate_values:
            self.trial.report(value, step=epoch)

    def should_prune(self) -> bool:
        return self.trial.should_prune()

    # -- outcomes: exactly one per trial ---------------------------------------------------------
    def complete(self, value: float) -> None:
        self._end(TrialState.COMPLETE, "", value)

    def prune(self, message: str) -> None:
        self._end(TrialState.PRUNED, message)

    def fail(self, message: str) -> None:
        self.trial.set_user_attr("fail_reason", message)
        self._end(TrialState.FAIL, message)

    def skip_repeat(self, of: int) -> None:
        """The sampler proposed an earlier trial's point: not trained, not counted."""
        self.trial.set_user_attr("repeat_of", of)
        self._end(TrialState.PRUNED, f"repeat of trial {of}: not trained")

    def _end(self, state: TrialState, message: str, value: float | None = None) -> None:
        if self.state is not None:
            raise RuntimeError(f"trial {self.number} already ended {self.state.name}; cannot end it {state.name}")
        self.state = state
        if self.run_id is not None:
            self.parts.tracker.end_trial(self.run_id, state.name, message)
        # skip_if_finished: the trial was failed by another worker that took this one for dead
        # (a heartbeat missed under load); its retry is already queued.
        self.finished = self.study.tell(self.trial, values=value, state=None if value is not None else state,
                                        skip_if_finished=True)

    # -- the with block -------------------------------------------------------------------------
    def __enter__(self) -> Trial:
        self.heartbeat.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: object) -> bool:
        interrupted = isinstance(err, (KeyboardInterrupt, StopRequested))
        try:
            if err is not None and self.state is None:
                self._record_error(err)
                if isinstance(err, KeyboardInterrupt):
                    self.fail("interrupted")
                elif isinstance(err, StopRequested):
                    self.fail(str(err))
                else:
                    self.fail(repr(err))
            elif err is None and self.state is None:
                raise RuntimeError(f"trial {self.number} left its owner without an outcome")
        finally:
            self.heartbeat.stop()
        if interrupted and self.finished is not None:
            self.parts.requeue(self.study, self.stored())    # its last complete epoch's checkpoint waits
        # An error in one trial is that trial's failure, recorded with its traceback; the worker
        # goes on (and stops after several in a row). Ctrl-C and the like stop the worker.
        return isinstance(err, Exception)

    def _record_error(self, err: BaseException) -> None:
        """The traceback in the trial's folder, and everything its seeds wrote, in its run."""
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        (self.trial_dir / ERROR_FILE).write_text("".join(traceback.format_exception(err)))
        if self.run_id is not None:
            self.parts.tracker.log_files(self.run_id, self.trial_dir)
            for folder, prefix in self.folders:
                if folder != self.trial_dir:
                    self.parts.tracker.log_files(self.run_id, folder, prefix)


def close_lost_run(tracker: StudyTracker, trial: FrozenTrial) -> None:
    """Close the MLflow run of a trial whose worker died (its Trial is gone with it), if the run
    is that trial's own and still open (a retry carries its predecessor's run id until it starts)."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        tracker.close_lost_trial(run_id, trial.number, "worker lost: no heartbeat within the grace period")
