"""A sweep worker's loop: hold up to `trials_at_once` trials, train their epochs together, conclude
each as it ends and take a new one in its place, until the study holds its target.

With one trial at a time this is the plain loop: ask, train, tell. With several (packing: the spec's
or `--pack`'s members per batched pass, divided by the seeds per trial), every held trial keeps its
own TrialOwner (heartbeat, MLflow run, outcome) and its own Lockstep group; only the training passes
are shared (models.lockstep.advance_together). A trial that is pruned, diverges or fails leaves at
the end of its epoch and a new trial takes its slot; one that crashes takes the members of its pack
with it (their state is past repair), and the others go on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState

from models.lockstep import Lockstep, PackFailed, advance_together

from harness.errors import SweepError
from .training import SweepContext, TrialTraining
from .signals import StopRequested
from harness.store.optuna_storage import best_trial, counted_trials, heartbeat_settings, state_counts
from .trial import TrialOwner

# A worker gives up after this many failed trials in a row: something is wrong beyond one config.
MAX_CONSECUTIVE_FAILURES = 3
# ... and after this many sampled repeats in a row: the sampler finds no new point in the space.
MAX_CONSECUTIVE_REPEATS = 20


@dataclass
class HeldTrial:
    owner: TrialOwner
    training: TrialTraining
    group: Lockstep


@dataclass
class SweepLoop:
    """One worker's trials: what it holds now, and its counts so far (for the progress lines)."""
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    ctx: SweepContext
    target: int
    timeout: float | None
    trials_at_once: int
    pack: int
    on_stale: object                          # StaleTrialHandler: queues an interrupted trial again
    report: object                            # (trials, best, finished trial, target, durations, echo) -> None
    held: list[HeldTrial] = field(default_factory=list)
    ran: int = 0
    durations: list[float] = field(default_factory=list)
    failures_in_row: int = 0
    repeats_in_row: int = 0
    exhausted: bool = False                   # the sampler keeps proposing points the study has

    def run(self) -> int:
        """Run until the study holds its target (and no other worker's trial may need a retry) or the
        timeout; returns the number of trials this worker trained."""
        started = time.monotonic()
        interval, _ = heartbeat_settings()
        waiting_for: set[int] = set()
        timed_out = False
        try:
            while True:
                if self.ctx.stop is not None:
                    self.ctx.stop.check()
                if not timed_out and self.timeout is not None and time.monotonic() - started >= self.timeout:
                    self.ctx.echo(f"timeout of {self.timeout:.0f}s reached")
                    timed_out = True
                fail_stale_trials(self.study)     # a dead worker's trial goes back in the queue before we count
                if not timed_out:
                    self._fill()
                if not self.held:
                    if timed_out or self.exhausted:
                        break
                    # Stay while other workers run the last trials: if one of them dies, its trial is
                    # re-queued after the grace period, and someone must be here to run it.
                    counted = counted_trials(self.study.get_trials(deepcopy=False))
                    running = {t.number for t in counted if t.state == TrialState.RUNNING}
                    if len(counted) < self.target:
                        continue
                    if not running:
                        break
                    if running != waiting_for:
                        self.ctx.echo(f"waiting for trial(s) {', '.join(map(str, sorted(running)))} on other "
                                      "workers (this worker retries any whose worker dies)")
                        waiting_for = running
                    time.sleep(interval)
                    continue
                waiting_for = set()
                self._train_one_epoch()
        except BaseException as err:
            self._abandon(err)
            raise
        return self.ran

    def _fill(self) -> None:
        """Take new trials while there is a free slot and the study wants more."""
        while len(self.held) < self.trials_at_once and not self.exhausted:
            if len(counted_trials(self.study.get_trials(deepcopy=False))) >= self.target:
                return
            owner = TrialOwner.ask(self.study, self.storage, self.ctx.tracker,
                                   lambda number: self.ctx.stores.trial_dir(self.ctx.spec.name, number))
            owner.__enter__()
            training = None
            try:
                training = TrialTraining.begin(owner, self.ctx)
                group = None if training is None else Lockstep(training.trainers, training.judge)
            except BaseException as err:
                if training is not None:
                    training.interrupted()
                self._leave(owner, err)
                self._settle(owner, None)
                continue
            if training is None:            # a sampled repeat: not trained
                owner.__exit__(None, None, None)
                self._settle(owner, None)
                continue
            self.held.append(HeldTrial(owner, training, group))

    def _train_one_epoch(self) -> None:
        """One epoch of every held trial (packed); conclude those that ended."""
        try:
            advance_together([held.group for held in self.held], self.pack)
        except PackFailed as failed:
            for group, error in failed.failures:
                held = next(h for h in self.held if h.group is group)
                self.held.remove(held)
                held.training.interrupted()
                self._leave(held.owner, error)
                self._settle(held.owner, held.training)
        for held in [h for h in self.held if not h.group.running]:
            try:
                held.training.conclude(held.group.finish())
            except BaseException as err:
                self.held.remove(held)
                self._leave(held.owner, err)
            else:
                self.held.remove(held)
                held.owner.__exit__(None, None, None)
            self._settle(held.owner, held.training)

    def _leave(self, owner: TrialOwner, err: BaseException) -> None:
        """Leave the owner with an error: an Exception is that trial's failure (recorded, the worker
        goes on); anything else (Ctrl-C, a stop signal) stops the worker, the trial queued again."""
        if not owner.__exit__(type(err), err, err.__traceback__):
            if isinstance(err, (KeyboardInterrupt, StopRequested)):
                self.on_stale(self.study, owner.stored())
            raise err

    def _settle(self, owner: TrialOwner, training: TrialTraining | None) -> None:
        """The accounting and progress line of a trial that has its outcome."""
        last = owner.finished
        if "repeat_of" in last.user_attrs:
            self.ctx.echo(f"trial {last.number}: the sampler repeated trial {last.user_attrs['repeat_of']}'s point; "
                          "not trained")
            self.repeats_in_row += 1
            if self.repeats_in_row >= MAX_CONSECUTIVE_REPEATS:
                self.ctx.echo(f"the sampler proposed {self.repeats_in_row} points in a row that the study already "
                              "has: its search space looks exhausted; stopping this worker")
                self.exhausted = True
            return
        self.repeats_in_row = 0
        if training is not None:
            self.durations.append(time.perf_counter() - training.started)
        self.ran += 1
        self.failures_in_row = self.failures_in_row + 1 if last.state == TrialState.FAIL else 0
        trials = self.study.get_trials(deepcopy=False)
        best = best_trial(trials)
        self.report(trials, best, last, self.target, self.durations or [0.0], self.ctx.echo, self.trials_at_once)
        self.ctx.tracker.log_study_progress(last.number, best.value if best else None, state_counts(trials))
        if self.failures_in_row >= MAX_CONSECUTIVE_FAILURES:
            raise SweepError(f"{self.failures_in_row} trials failed in a row (last: trial {last.number}: "
                             f"{last.user_attrs.get('fail_reason') or '?'}); stopping this worker")

    def _abandon(self, err: BaseException) -> None:
        """The worker stops with trials in hand: each is recorded as interrupted (its last complete
        epoch's checkpoint stays) and, when a signal stopped the worker, queued again."""
        while self.held:
            held = self.held.pop()
            held.training.interrupted()
            held.owner.__exit__(type(err), err, err.__traceback__)
            if isinstance(err, (KeyboardInterrupt, StopRequested)):
                self.on_stale(self.study, held.owner.stored())
