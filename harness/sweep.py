"""`harness sweep`: open (or create) the Optuna study of a spec and run trials until it has enough.

`n_trials` is the study's target size, shared by every worker: a worker takes
new trials while the study holds fewer (not counting trials that are queued,
nor failed trials that were re-queued as a retry). Running the command again
continues the same study; raise `--n-trials` to extend a finished one.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from models.config import TrainConfig
from models.errors import HarnessError
from models.data import load_dance_data

from .datasets import frames_cache_dir, resolve_data_root
from .fingerprint import record_fingerprint, spec_matches_study
from .objective import SweepContext, train_trial
from .progress import format_duration
from .stop_signals import StopRequested, StopSignals
from .stores import Stores, safe_url, store_lock
from .studies import StudySpec, make_pruner, make_sampler, train_values
from .study import best_trial, counted_trials, heartbeat_settings, open_storage, state_counts
from .tracking import StudyTracker
from .trial_owner import TrialOwner, close_lost_run

# A worker gives up after this many failed trials in a row: something is wrong beyond one config.
MAX_CONSECUTIVE_FAILURES = 3
# ... and after this many sampled repeats in a row: the sampler finds no new point in the space.
MAX_CONSECUTIVE_REPEATS = 20


class SweepError(HarnessError):
    """The sweep cannot go on (one line, shown to the user)."""


class StudyMismatch(HarnessError):
    """The spec no longer matches the study stored under its name."""


@dataclass
class SweepSummary:
    study_name: str
    target: int
    counted: int
    ran: int                        # trials this worker ran
    states: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict
    best_ci95: float | None = None      # the best trial's 95% half-width over its seeds (None: one seed)


class StaleTrialHandler:
    """What happens to a trial whose worker died (or was interrupted): Optuna has marked it FAIL;
    queue it again (up to `retries` times) and close its MLflow run as failed."""

    def __init__(self, retries: int, tracker: StudyTracker):
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=retries, inherit_intermediate_values=True)
        self.tracker = tracker

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.retry(study, trial)
        close_lost_run(self.tracker, trial)


def open_study(spec: StudySpec, stores: Stores, storage: BaseStorage, seed: int | None) -> optuna.Study:
    """Load the spec's study, or create it and enqueue the spec's reference trials, in `storage`
    (the worker's own: its trials' heartbeats go through it).

    Under the store's lock, so that a worker starting beside the creator finds the reference
    trials already queued rather than sampling ahead of them."""
    sampler, pruner = make_sampler(spec, seed), make_pruner(spec)
    with store_lock(stores.storage_url):
        try:
            study = optuna.create_study(storage=storage, study_name=spec.name, direction=spec.direction,
                                        sampler=sampler, pruner=pruner)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner)
            if not spec_matches_study(study, spec):
                raise StudyMismatch(f"study {spec.name!r} in {safe_url(stores.storage_url)} was created from a "
                                    f"different {spec.path.name} (data, budget, fixed values or search space "
                                    "changed); its trials would not compare: use a new study name")
            return study
        record_fingerprint(study, spec)
        study.set_user_attr("spec_path", str(spec.path))
        study.set_user_attr("description", spec.description)
        for index, params in enumerate(spec.enqueue):
            study.enqueue_trial(params, user_attrs={"enqueued": "reference" if index == 0 else "spec"})
    return study


def run_sweep(spec: StudySpec, stores: Stores, *, n_trials: int | None = None, timeout: float | None = None,
              device: str = "auto", seed: int | None = None, echo: Callable[[str], None] = print,
              stop: StopSignals | None = None, checkpoint_every: int = 1) -> SweepSummary:
    """Take trials of the spec's study until it holds its target; with `stop`, a stop signal ends the
    worker at the next safe point (StopRequested), its running trial queued again. Each trial's
    checkpoint goes to its MLflow run after every `checkpoint_every` epochs (0: at its end only)."""
    target = n_trials if n_trials is not None else spec.n_trials
    timeout = timeout if timeout is not None else spec.timeout
    heartbeat_interval, _ = heartbeat_settings()      # bad settings fail before any store is touched
    tracker = StudyTracker(stores, spec.name)
    on_stale = StaleTrialHandler(spec.retries, tracker)
    storage = open_storage(stores, on_stale)
    study = open_study(spec, stores, storage, seed)
    tracker.study_started(spec.path.read_text(), spec.description)

    base = TrainConfig.from_dict(train_values(spec, {}))   # what no trial changes: frame size, lengths
    config_seed = seed if seed is not None else base.seed
    data_root = resolve_data_root(spec.data, base.height, base.width, progress=echo)
    data = load_dance_data(data_root, height=base.height, width=base.width, train_vi_len=base.train_vi_len,
                           val_vi_len=base.val_vi_len, cache_dir=frames_cache_dir())
    ctx = SweepContext(spec, stores, tracker, data, data_root, device, config_seed, echo, stop, checkpoint_every)
    echo(f"study {spec.name}: target {target} trials; storage {safe_url(stores.storage_url)}; "
         f"tracking {safe_url(stores.tracking_uri)}")

    started = time.monotonic()
    ran, failures_in_row, repeats_in_row, durations = 0, 0, 0, []
    waiting_for: set[int] = set()
    while True:
        if stop is not None:
            stop.check()
        if timeout is not None and time.monotonic() - started >= timeout:
            echo(f"timeout of {timeout:.0f}s reached")
            break
        fail_stale_trials(study)     # a dead worker's trial goes back in the queue before we count
        trials = study.get_trials(deepcopy=False)
        counted = counted_trials(trials)
        if len(counted) >= target:
            # Stay while other workers run the last trials: if one of them dies, its trial is re-queued
            # after the grace period, and someone must be here to run it.
            running = {t.number for t in counted if t.state == TrialState.RUNNING}
            if not running:
                break
            if running != waiting_for:
                echo(f"waiting for trial(s) {', '.join(map(str, sorted(running)))} on other workers "
                     "(this worker retries any whose worker dies)")
                waiting_for = running
            time.sleep(heartbeat_interval)
            continue
        waiting_for = set()
        trial_start = time.monotonic()
        owner = TrialOwner.ask(study, storage, tracker, functools.partial(stores.trial_dir, spec.name))
        try:
            with owner:
                train_trial(owner, ctx)
        except (KeyboardInterrupt, StopRequested):
            on_stale(study, owner.stored())    # a stopped trial is queued again, as a dead worker's is
            raise
        last = owner.finished
        if "repeat_of" in last.user_attrs:
            echo(f"trial {last.number}: the sampler repeated trial {last.user_attrs['repeat_of']}'s point; not trained")
            repeats_in_row += 1
            if repeats_in_row >= MAX_CONSECUTIVE_REPEATS:
                echo(f"the sampler proposed {repeats_in_row} points in a row that the study already has: "
                     "its search space looks exhausted; stopping this worker")
                break
            continue
        repeats_in_row = 0
        durations.append(time.monotonic() - trial_start)
        ran += 1
        failures_in_row = failures_in_row + 1 if last.state == TrialState.FAIL else 0
        trials = study.get_trials(deepcopy=False)
        best = best_trial(trials)
        _report_trial(trials, best, last, target, durations, echo)
        tracker.log_study_progress(last.number, best.value if best else None, state_counts(trials))
        if failures_in_row >= MAX_CONSECUTIVE_FAILURES:
            raise SweepError(f"{failures_in_row} trials failed in a row (last: trial {last.number}: "
                             f"{last.user_attrs.get('fail_reason') or '?'}); stopping this worker")

    trials = study.get_trials(deepcopy=False)
    best = best_trial(trials)
    states = state_counts(trials)
    if len(counted_trials(trials)) >= target and states["RUNNING"] == 0 and states["WAITING"] == 0:
        tracker.study_finished(best.number if best else None)
    return SweepSummary(spec.name, target, len(counted_trials(trials)), ran, states,
                        best.number if best else None, best.value if best else None, best.params if best else {},
                        best.user_attrs.get("value_ci95") if best else None)


def _report_trial(trials: list[FrozenTrial], best: FrozenTrial | None, trial: FrozenTrial, target: int,
                  durations: list[float], echo: Callable[[str], None]) -> None:
    """One line per finished trial: its result, the study's best so far, and this worker's ETA."""
    done = len(counted_trials(trials))
    if trial.state == TrialState.COMPLETE:
        spread = trial.user_attrs.get("value_ci95")
        seeds = len(trial.user_attrs.get("seeds") or [])
        outcome = f"{trial.value:.2f} dB" + (f" ± {spread:.2f} (95%, {seeds} seeds)" if spread is not None else "")
    elif trial.state == TrialState.PRUNED:
        outcome = f"pruned after epoch {trial.last_step + 1}"
    else:
        outcome = str(trial.user_attrs.get("fail_reason") or "failed")[:200]
    best_text = f"best {best.value:.2f} dB (trial {best.number})" if best else "no completed trial yet"
    shares = ""
    if "validation_share" in trial.user_attrs:
        shares = (f" (validation {100 * trial.user_attrs['validation_share']:.0f}%, "
                  f"harness {100 * trial.user_attrs['overhead_share']:.0f}%)")
    remaining = max(0, target - done)
    eta = format_duration(sum(durations) / len(durations) * remaining)
    echo(f"trial {trial.number} {trial.state.name}: {outcome} in {format_duration(durations[-1])}{shares} | "
         f"{best_text} | study {done}/{target} | ETA {eta} for this worker alone")

