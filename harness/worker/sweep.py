"""`harness sweep`: open (or create) the Optuna study of a spec and run trials until it has enough.

`n_trials` is the study's target size, shared by every worker: a worker takes
new trials while the study holds fewer (not counting trials that are queued,
nor failed trials that were re-queued as a retry). Running the command again
continues the same study; raise `--n-trials` to extend a finished one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from models.config import TrainConfig
from models.errors import HarnessError
from models.data import load_dance_data

from .datasets import frames_cache_dir, resolve_data_root
from harness.spec.fingerprint import record_fingerprint, spec_matches_study
from harness.errors import SweepError
from .training import SweepContext
from harness.outputs.progress import format_duration
from .signals import StopSignals
from harness.store.locations import Stores, safe_url, store_lock
from harness.spec import StudySpec, train_values
from .search import make_pruner, make_sampler
from harness.store.optuna_storage import best_trial, counted_trials, heartbeat_settings, open_storage, state_counts
from harness.store.tracking import StudyTracker
from .loop import SweepLoop
from .trial import close_lost_run

__all__ = ["SweepError", "run_sweep"]


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
    heartbeat_settings()      # bad settings fail before any store is touched
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

    # `pack` members per batched pass; a worker holds as many trials as fill one with their seeds.
    trials_at_once = max(1, spec.pack // spec.seeds)
    loop = SweepLoop(study, storage, ctx, target, timeout, trials_at_once, spec.pack, on_stale, _report_trial)
    ran = loop.run()

    trials = study.get_trials(deepcopy=False)
    best = best_trial(trials)
    states = state_counts(trials)
    if len(counted_trials(trials)) >= target and states["RUNNING"] == 0 and states["WAITING"] == 0:
        tracker.study_finished(best.number if best else None)
    return SweepSummary(spec.name, target, len(counted_trials(trials)), ran, states,
                        best.number if best else None, best.value if best else None, best.params if best else {},
                        best.user_attrs.get("value_ci95") if best else None)


def _report_trial(trials: list[FrozenTrial], best: FrozenTrial | None, trial: FrozenTrial, target: int,
                  durations: list[float], echo: Callable[[str], None], at_once: int = 1) -> None:
    """One line per finished trial: its result, the study's best so far, and this worker's ETA
    (`at_once`: trials it trains together)."""
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
    eta = format_duration(sum(durations) / len(durations) * remaining / at_once)
    echo(f"trial {trial.number} {trial.state.name}: {outcome} in {format_duration(durations[-1])}{shares} | "
         f"{best_text} | study {done}/{target} | ETA {eta} for this worker alone")

