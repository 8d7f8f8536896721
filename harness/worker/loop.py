"""A sweep worker's loop: hold up to `trials_at_once` trials, train their epochs together, take each
trial's outcome as it ends and a new trial in its place, until the study holds its target.

With one trial at a time this is the plain loop: ask, train, tell. With several (packing: the spec's
or `--pack`'s members per batched pass, divided by the seeds per trial), every held trial is its own
`trial_epochs` generator (its own Trial, heartbeat, MLflow run, outcome) and its own Lockstep group;
only the training passes are shared (models.lockstep.advance_together). A trial that is pruned,
diverges or fails leaves at the end of its epoch and a new trial takes its slot; one that crashes
takes the members of its pack with it (their state is past repair), and the others go on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Generator, Protocol

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState

from harness.errors import SweepError
from harness.outputs.progress import format_duration
from harness.store.optuna_storage import idle_poll_seconds
from harness.store.trials import best_trial, counted_trials, state_counts
from models.lockstep import Lockstep, PackFailed, advance_together

from .training import Finished, WorkerContext, trial_epochs
from .trial import ask

# A worker gives up after this many failed trials in a row: something is wrong beyond one config.
MAX_CONSECUTIVE_FAILURES = 3
# ... and after this many sampled repeats in a row: the sampler finds no new point in the space.
MAX_CONSECUTIVE_REPEATS = 20


class TrialSource(Protocol):
    """Where a worker's trials come from: the search samples them up to a target; a confirmation
    queues them in rounds."""

    def claim(self) -> optuna.Trial | None:
        """The next trial for this worker (asked, so RUNNING), or None when there is none to take now."""

    def finished(self) -> bool:
        """Nothing more will be there to claim (trials other workers run may still end, or be retried)."""


class SearchTrials:
    """The search's trials: sampled (or queued: reference, retries) until the study holds `target`;
    `resumed` is called as each is taken (the study is running again, should another worker have left
    it stopped)."""

    def __init__(self, study: optuna.Study, target: int, resumed: Callable[[], None]):
        self.study = study
        self.target = target
        self.resumed = resumed

    def finished(self) -> bool:
        return len(counted_trials(self.study.get_trials(deepcopy=False))) >= self.target

    def claim(self) -> optuna.Trial | None:
        if self.finished():
            return None
        self.resumed()
        return ask(self.study)


@dataclass
class Held:
    """A trial this worker trains now: its life (from ask to tell) and its seeds' group."""
    epochs: Generator[Lockstep, None, Finished]
    group: Lockstep


class SweepLoop:
    """One worker's trials: what it holds now, and its counts so far (for the progress lines)."""

    def __init__(self, ctx: WorkerContext, source: TrialSource, *, target: int, timeout: float | None,
                 trials_at_once: int, pack: int):
        self.ctx = ctx
        self.source = source
        self.study = ctx.parts.study
        self.target = target        # for the progress lines: the trials the study is to hold
        self.timeout = timeout
        self.trials_at_once = trials_at_once
        self.pack = pack
        self.held: list[Held] = []
        self.ran = 0
        self.durations: list[float] = []
        self.failures_in_row = 0
        self.repeats_in_row = 0
        self.exhausted = False      # the sampler keeps proposing points the study has

    def run(self) -> int:
        """Run until the source is finished (and no other worker's trial may need a retry) or the
        timeout; returns the number of trials this worker trained."""
        started = time.monotonic()
        interval = idle_poll_seconds()
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
                    running = {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
                    if not running and self.source.finished():
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
            asked = self.source.claim()
            if asked is None:
                return
            epochs = trial_epochs(self.ctx, asked)
            try:
                group = next(epochs)
            except StopIteration as done:      # not trained (a repeat), or failed before its first epoch
                self._settle(done.value)
                continue
            self.held.append(Held(epochs, group))

    def _train_one_epoch(self) -> None:
        """One epoch of every held trial (packed); take the outcomes of those that ended."""
        try:
            advance_together([held.group for held in self.held], self.pack)
        except PackFailed as failed:
            for group, error in failed.failures:
                held = next(h for h in self.held if h.group is group)
                self.held.remove(held)
                self._settle(_ended(held, error))
        for held in [h for h in self.held if not h.group.running]:
            self.held.remove(held)
            self._settle(_ended(held))

    def _settle(self, finished: Finished) -> None:
        """The accounting and progress line of a trial that has its outcome."""
        last = finished.trial
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
        if finished.seconds is not None:
            self.durations.append(finished.seconds)
        self.ran += 1
        self.failures_in_row = self.failures_in_row + 1 if last.state == TrialState.FAIL else 0
        trials = self.study.get_trials(deepcopy=False)
        self._report(trials, last)
        best = best_trial(trials)
        self.ctx.parts.tracker.log_study_progress(last.number, best.value if best else None, state_counts(trials))
        if self.failures_in_row >= MAX_CONSECUTIVE_FAILURES:
            raise SweepError(f"{self.failures_in_row} trials failed in a row (last: trial {last.number}: "
                             f"{last.user_attrs.get('fail_reason') or '?'}); stopping this worker")

    def _report(self, trials: list, trial) -> None:
        """One line per finished trial: its result, the study's best so far, and this worker's ETA."""
        done = sum(t.state.is_finished() for t in counted_trials(trials))     # others' running trials are not done
        if trial.state == TrialState.COMPLETE:
            spread = trial.user_attrs.get("value_ci95")
            seeds = len(trial.user_attrs.get("seeds") or [])
            outcome = f"{trial.value:.2f} dB" + (f" ± {spread:.2f} (95%, {seeds} seeds)" if spread is not None else "")
        elif trial.state == TrialState.PRUNED:
            outcome = f"pruned after epoch {trial.last_step + 1}"
        else:
            outcome = str(trial.user_attrs.get("fail_reason") or "failed")[:200]
        best = best_trial(trials)
        best_text = f"best {best.value:.2f} dB (trial {best.number})" if best else "no completed trial yet"
        shares = ""
        if "validation_share" in trial.user_attrs:
            shares = (f" (validation {100 * trial.user_attrs['validation_share']:.0f}%, "
                      f"harness {100 * trial.user_attrs['overhead_share']:.0f}%)")
        durations = self.durations or [0.0]
        eta = format_duration(sum(durations) / len(durations) * max(0, self.target - done) / self.trials_at_once)
        self.ctx.echo(f"trial {trial.number} {trial.state.name}: {outcome} in {format_duration(durations[-1])}"
                      f"{shares} | {best_text} | study {done}/{self.target} | ETA {eta} for this worker alone")

    def _abandon(self, err: BaseException) -> None:
        """The worker stops with trials in hand: each is recorded as failed by `err` (its last complete
        epoch's checkpoint stays) and, when a signal stopped the worker, queued again."""
        while self.held:
            held = self.held.pop()
            try:
                _ended(held, err)
            except BaseException as again:
                if again is not err:
                    raise


def _ended(held: Held, error: BaseException | None = None) -> Finished:
    """The trial's Finished, once its group has stopped (`error`: the error that stopped it, thrown
    into its life so that its Trial records it)."""
    try:
        if error is None:
            next(held.epochs)
        else:
            held.epochs.throw(error)
    except StopIteration as done:
        return done.value
    raise RuntimeError("a trial went on training after its group had stopped")
