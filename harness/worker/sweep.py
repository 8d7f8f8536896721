"""`harness sweep`: open (or create) the Optuna study of a spec and run trials until it has enough.

`n_trials` is the study's target size, shared by every worker: a worker takes
new trials while the study holds fewer (not counting trials that are queued,
nor failed trials that were re-queued as a retry). Running the command again
continues the same study; raise `--n-trials` to extend a finished one.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable

import optuna
from mlflow.exceptions import MlflowException
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from harness.errors import UsageError
from harness.ranking import Ranked, confirmed_ranking, ranking_rows
from harness.spec import StudySpec, train_values
from harness.spec.fingerprint import fingerprint_attrs, recorded_in_older_version, spec_matches
from harness.store.confirmation import standing
from harness.store.locations import Stores, mask_secrets, store_lock
from harness.store.optuna_storage import heartbeat_settings, idle_poll_seconds, open_storage
from harness.store.tracking import StudyTracker
from harness.store.trials import best_trial, counted_trials, load_existing_study, state_counts
from models.config import TrainConfig
from models.data import load_dance_data
from models.errors import HarnessError

from .confirm import ConfirmTrials, open_confirmation
from .datasets import frames_cache_dir, resolve_data_root
from .loop import SearchTrials, SweepLoop
from .pack_fit import fitting_pack
from .search import make_pruner, make_sampler
from .signals import StopSignals
from .training import WorkerContext
from .trial import StudyParts, close_lost_run


class StudyMismatch(HarnessError):
    """The spec no longer matches the study stored under its name."""


@dataclass(frozen=True)
class SweepSummary:
    study_name: str
    target: int
    counted: int
    ran: int                        # trials this worker ran
    states: dict[str, int]
    best: FrozenTrial | None


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
            if not spec_matches(study.user_attrs, spec):
                raise StudyMismatch(f"study {spec.name!r} in {mask_secrets(stores.storage_url)} was created from a "
                                    f"different {spec.path.name} (data, budget, fixed values or search space "
                                    "changed); its trials would not compare: use a new study name")
            if recorded_in_older_version(study.user_attrs):
                _set_attrs(study, fingerprint_attrs(spec))
            return study
        _set_attrs(study, fingerprint_attrs(spec) | {"spec_path": str(spec.path), "description": spec.description})
        for index, params in enumerate(spec.enqueue):
            study.enqueue_trial(params, user_attrs={"enqueued": "reference" if index == 0 else "spec"})
    return study


def _set_attrs(study: optuna.Study, attrs: dict) -> None:
    for key, value in attrs.items():
        study.set_user_attr(key, value)


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """How a worker runs, whatever its study: the device of its trainings, the seed that overrides the
    spec's, the stop signals it heeds, how often a checkpoint goes to MLflow, where it reports."""
    device: str = "auto"
    seed: int | None = None
    echo: Callable[[str], None] = print
    stop: StopSignals | None = None
    checkpoint_every: int = 1           # upload after every k-th epoch (0: at a trial's end only)


def worker_context(spec: StudySpec, parts: StudyParts, options: WorkerOptions) -> WorkerContext:
    """The data loaded once for every trial of this worker, and what they share."""
    base = TrainConfig.from_dict(train_values(spec, {}))   # what no trial changes: frame size, lengths
    data_root = resolve_data_root(spec.data, base.height, base.width, progress=options.echo)
    data = load_dance_data(data_root, height=base.height, width=base.width, train_vi_len=base.train_vi_len,
                           val_vi_len=base.val_vi_len, cache_dir=frames_cache_dir())
    return WorkerContext(spec=spec, parts=parts, data=data, data_root=data_root, device=options.device,
                         seed=options.seed if options.seed is not None else base.seed, echo=options.echo,
                         stop=options.stop, checkpoint_every=options.checkpoint_every)


def run_sweep(spec: StudySpec, stores: Stores, options: WorkerOptions = WorkerOptions(), *,
              n_trials: int | None = None, timeout: float | None = None) -> SweepSummary:
    """Take trials of the spec's study until it holds its target; with `options.stop`, a stop signal ends
    the worker at the next safe point (StopRequested), its running trial queued again."""
    target = n_trials if n_trials is not None else spec.n_trials
    timeout = timeout if timeout is not None else spec.timeout
    heartbeat_settings()      # bad settings fail before any store is touched
    tracker = StudyTracker(stores, spec.name)
    requeue = StaleTrialHandler(spec.retries, tracker)
    storage = open_storage(stores, requeue)
    study = open_study(spec, stores, storage, options.seed)
    tracker.study_started(spec.path.read_text(), spec.description)
    try:     # from here on the parent run says RUNNING: whatever stops this worker must not leave it so
        ctx = worker_context(spec, StudyParts(study, storage, tracker, stores, requeue), options)
        options.echo(f"study {spec.name}: target {target} trials; storage {mask_secrets(stores.storage_url)}; "
                     f"tracking {mask_secrets(stores.tracking_uri)}")
        # `pack` members per batched pass (fewer where they would not fit the device's memory); a worker
        # holds as many trials as fill one with their seeds.
        pack = fitting_pack(spec, ctx)
        loop = SweepLoop(ctx, SearchTrials(study, target, tracker.study_resumed), target=target, timeout=timeout,
                         trials_at_once=max(1, pack // spec.seeds), pack=pack)
        ran = loop.run()
    except BaseException as err:     # a stop signal, Ctrl-C, failures in a row, data that cannot be loaded
        leave_unfinished(tracker, study, target, stop_reason(err))
        raise

    trials = study.get_trials(deepcopy=False)
    best = best_trial(trials)
    states = state_counts(trials)
    if len(counted_trials(trials)) >= target and states["RUNNING"] == 0 and states["WAITING"] == 0:
        tracker.study_finished(best.number if best else None)
    else:
        why = ("its search space looks exhausted" if loop.exhausted else f"the timeout of {timeout:g} s ran out"
               if timeout is not None else "trials queued beyond its target")
        leave_unfinished(tracker, study, target, why)
    return SweepSummary(spec.name, target, len(counted_trials(trials)), ran, states, best)


def stop_reason(err: BaseException) -> str:
    """Why a worker stopped, in a few words for the parent run's tag (the first line of what stopped it)."""
    lines = str(err).strip().splitlines()
    return mask_secrets(lines[0]) if lines else "interrupted"


def leave_unfinished(tracker: StudyTracker, study: optuna.Study, target: int, why: str) -> None:
    """A worker leaves the study short of its target: the last one to leave (no trial of it runs any more)
    ends its parent run KILLED, saying why and what remains, so that the study does not look running."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.RUNNING for t in trials):
        return
    remaining = max(0, target - len(counted_trials(trials)))
    queued = sum(t.state == TrialState.WAITING for t in trials)
    with contextlib.suppress(MlflowException):    # an unreachable tracking store must not hide why it stopped
        tracker.study_stopped(f"stopped ({why}): {remaining} of {target} trials still to run, {queued} of them "
                              f"queued; harness sweep --study {study.study_name} continues it")


@dataclass(frozen=True)
class ConfirmSummary:
    study_name: str
    ran: int                        # trainings this worker ran
    ranking: list[Ranked]           # the confirmed ranking, the leader first


def run_confirmation(spec: StudySpec, stores: Stores, options: WorkerOptions = WorkerOptions(),
                     timeout: float | None = None) -> ConfirmSummary:
    """Confirm the spec's finished search (its `confirm` section): plan the candidates once, then train
    their fresh seeds, raced, beside any other worker of the same study; ends when the race is done."""
    if spec.confirm is None:
        raise UsageError(f"{spec.path}: the spec has no confirm section; add one (docs/studies.md) to confirm "
                         f"study {spec.name}")
    heartbeat_settings()
    tracker = StudyTracker(stores, spec.name)
    requeue = StaleTrialHandler(spec.retries, tracker)
    storage = open_storage(stores, requeue)
    search = load_existing_study(stores, spec.name)
    _wait_for_search(search, options)
    study = open_confirmation(spec, stores, storage, search, options.echo)
    source = ConfirmTrials(study, stores, options.echo)
    ctx = worker_context(spec, StudyParts(study, storage, tracker, stores, requeue), options)
    pack = fitting_pack(spec, ctx)
    loop = SweepLoop(ctx, source, target=len(source.plan.candidates) * len(source.plan.seeds), timeout=timeout,
                     trials_at_once=pack, pack=pack)
    ran = loop.run()
    ranking = confirmed_ranking(source.plan.candidates, *_values_and_stops(study, source))
    if source.finished():
        tracker.log_confirmation(ranking_rows(ranking))
    return ConfirmSummary(spec.name, ran, ranking)


def _values_and_stops(study: optuna.Study, source: ConfirmTrials) -> tuple[dict, dict]:
    now = standing(study, source.plan)
    return now.values, now.stopped


def _wait_for_search(search: optuna.Study, options: WorkerOptions) -> None:
    """A confirmation picks from the finished search: wait while other workers run its last trials."""
    interval = idle_poll_seconds()
    said = False
    while True:
        unfinished = search.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        if not unfinished:
            return
        if not said:
            options.echo(f"confirmation waits for the search's trial(s) {', '.join(str(t.number) for t in unfinished)}")
            said = True
        if options.stop is not None:
            options.stop.check()
        fail_stale_trials(search)
        time.sleep(interval)
