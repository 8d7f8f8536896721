"""One trial's training: the CVAE trained with the trial's params, once per seed, judged per epoch.

`train_trial` is the objective, as a generator: it suggests the trial's params, opens its seeds'
trainers (restored when the trial is a retry), and hands the worker their `Lockstep` group once per
epoch to train (with other trials' groups when packed); when the group stops it records the outcome
on the Trial. `trial_epochs` wraps it in the Trial's `with` block, from ask to tell.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from harness.intervals import mean_interval
from harness.outputs.names import REGIONS, epoch_metrics, final_metric, seed_folder_name, seed_prefix
from harness.outputs.progress import ProgressReporter
from harness.outputs.run_folder import RunOutputs, write_seed_plot
from harness.spec import StudySpec, train_values
from models.config import TrainConfig
from models.data import DanceData
from models.lockstep import Lockstep
from models.records import Callback, EpochRecord, RunSummary, StepRecord
from models.trainer import Trainer

from .mlflow_logger import MlflowTrialLogger, curve_series, final_metrics
from .resume import Resumed, trainer_for
from .search import suggest_params
from .signals import StopSignals
from .trial import StudyParts, Trial


@dataclass(frozen=True, kw_only=True)
class WorkerContext:
    """What every trial of one worker shares: the spec, the study's parts, the data loaded once."""
    spec: StudySpec
    parts: StudyParts
    data: DanceData
    data_root: Path
    device: str
    seed: int
    echo: Callable[[str], None]
    stop: StopSignals | None = None     # checked at the trainers' safe points
    checkpoint_every: int = 1           # upload each seed's checkpoint to MLflow after every k-th epoch (0: at the end)


@dataclass(frozen=True)
class Finished:
    """A trial's end as its worker counts it: the stored trial, and how long this worker spent on it
    (None when it was not trained: a sampled repeat)."""
    trial: FrozenTrial
    seconds: float | None


class StopAtSafePoints(Callback):
    """A trainer's safe points for a stop signal: after each training step, and after each epoch's
    checkpoint (the callbacks before this one have recorded the epoch)."""

    def __init__(self, signals: StopSignals):
        self.signals = signals

    def on_step_end(self, step: StepRecord) -> None:
        self.signals.check()

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.signals.check()


class EpochJudge:
    """Judges a trial after each epoch that all its seeds have finished: reports their mean
    validation PSNR (the pruner compares trials by it), logs the seeds' mean metrics when there
    are several, and asks them to stop when the pruner says so.

    A retry keeps its trial's role: the epochs an earlier attempt passed (a retry inherits their values,
    also when it trains them again for want of a checkpoint) are never judged again, and the reference
    (the lab's defaults, which every gain is measured against) is never pruned, so that a study does not
    lose it to a dead worker."""

    def __init__(self, trial: Trial, seeds: int, first_new_epoch: int):
        self.trial = trial
        self.seeds = seeds
        passed = trial.stored().intermediate_values
        self.first_judged_epoch = max([first_new_epoch, *(step + 1 for step in passed)])
        self.prunable = trial.trial.user_attrs.get("enqueued") != "reference"
        self.pruned_at: int | None = None

    def __call__(self, epoch: int, records: list[EpochRecord]) -> str | None:
        self.trial.report(epoch, float(np.mean([record.val_psnr for record in records])))
        if self.seeds > 1:
            self.trial.log_metrics(mean_metrics([epoch_metrics(record) for record in records]), step=epoch)
        if self.prunable and epoch >= self.first_judged_epoch and self.trial.should_prune():
            self.pruned_at = epoch
            return f"pruned by {type(self.trial.study.pruner).__name__}"
        return None


def mean_metrics(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """The seeds' mean of each metric that every seed has."""
    return {key: float(np.mean([metrics[key] for metrics in per_seed]))
            for key in per_seed[0] if all(key in metrics for metrics in per_seed)}


@dataclass
class SeedRun:
    """One seed of a trial: its training, its folder, whether it resumed an earlier attempt."""
    seed: int
    folder: Path
    trainer: Trainer
    resumed: Resumed | None
    logger: MlflowTrialLogger


def trial_epochs(ctx: WorkerContext, asked: optuna.Trial) -> Generator[Lockstep, None, Finished]:
    """A trial from ask to tell: yields its seeds' group once per epoch, and returns how it finished. An
    error is the trial's failure (recorded; the worker goes on); an interruption is recorded, the trial
    queued again, and raised on."""
    started = time.perf_counter()
    trained = True      # a trial that fails counts as trained: it took this worker's time
    with Trial(ctx.parts, asked) as trial:
        trained = yield from train_trial(trial, ctx)
    return Finished(trial.finished, time.perf_counter() - started if trained else None)


def train_trial(trial: Trial, ctx: WorkerContext) -> Generator[Lockstep, None, bool]:
    """The objective: the trial's params, its seeds trained epoch by epoch (yielding their group for
    the worker to advance), its outcome. Returns False for a sampled repeat of an earlier point (not
    trained), else True."""
    started = time.perf_counter()
    params = suggest_params(trial.trial, ctx.spec)
    repeat = repeated_trial(trial, params)
    if repeat is not None:
        trial.skip_repeat(repeat)
        return False
    config = TrainConfig.from_dict(train_values(ctx.spec, params) | {"data": str(ctx.data_root),
                                                                     "device": ctx.device, "seed": ctx.seed})
    # A confirmation trains one fresh seed; a search trial the spec's seeds from the sweep's.
    confirmation = trial.confirmation
    seeds = [confirmation["seed"]] if confirmation else trial_seeds(config.seed, ctx.spec.seeds)
    config = config.replace(seed=seeds[0])
    trial.start(config.to_dict(), sorted(params), seeds)
    what = (f"confirmation {trial.number} of trial {confirmation['confirms']} ({confirmation['candidate']}), "
            f"seed {seeds[0]}: " if confirmation else f"trial {trial.number}: ")
    ctx.echo(what + ", ".join(f"{k}={_short(v)}" for k, v in params.items())
             + (f" (seeds {seeds[0]}..{seeds[-1]})" if len(seeds) > 1 else ""))
    runs = [_seed_run(trial, ctx, config.replace(seed=seed), len(seeds)) for seed in seeds]
    _note_resumed(trial, runs)
    first_new_epoch = min(run.trainer.epoch for run in runs)
    judge = EpochJudge(trial, len(runs), first_new_epoch)
    try:
        group = Lockstep([run.trainer for run in runs], judge)
        while group.running:
            yield group
        summaries = group.finish()
    except BaseException:
        _record_facts(trial, runs, None, started, first_new_epoch)    # what this attempt trained
        raise
    _record_facts(trial, runs, summaries, started, first_new_epoch)
    _conclude(trial, ctx, runs, summaries, judge)
    return True


def repeated_trial(trial: Trial, params: dict) -> int | None:
    """The number of an earlier trial with exactly these params, when this trial was sampled
    (enqueued trials and retries repeat on purpose): training it again would only repeat a point."""
    if {"fixed_params", "failed_trial"} & set(trial.stored().system_attrs):
        return None
    for other in trial.study.get_trials(deepcopy=False):
        if other.number != trial.number and other.params == params and "repeat_of" not in other.user_attrs:
            return other.number
    return None


def trial_seeds(seed: int, count: int) -> list[int]:
    """The training seeds of a trial: `count` consecutive seeds from the sweep's."""
    return [seed + k for k in range(count)]


def seed_folder(trial_dir: Path, seed: int, seeds: int) -> Path:
    """Where one seed's run lives: the trial folder itself when the trial has one seed."""
    return trial_dir if seeds == 1 else trial_dir / seed_folder_name(seed)


def _seed_run(trial: Trial, ctx: WorkerContext, config: TrainConfig, seeds: int) -> SeedRun:
    """One seed's trainer with its callbacks: progress, run folder, MLflow (under `seed_<s>/`
    in the trial's run when the trial has several seeds), the stop signal's safe points."""
    folder = seed_folder(trial.trial_dir, config.seed, seeds)
    label = f"trial {trial.number}" + (f" seed {config.seed}" if seeds > 1 else "")
    prefix = seed_prefix(config.seed, seeds)
    trial.keep_files(folder, prefix)
    logger = MlflowTrialLogger(trial.parts.tracker, trial.run_id, folder, prefix, ctx.checkpoint_every)
    callbacks: list[Callback] = [ProgressReporter(prefix=f"  [{label}] "),
                                 RunOutputs(folder, ctx.data_root, plots_every_epoch=False), logger]
    if ctx.stop is not None:
        callbacks.append(StopAtSafePoints(ctx.stop))
    trainer, resumed = trainer_for(trial, config, ctx.data, folder, prefix, callbacks, ctx.echo)
    return SeedRun(config.seed, folder, trainer, resumed, logger)


def _note_resumed(trial: Trial, runs: list[SeedRun]) -> None:
    resumed = [run.resumed for run in runs if run.resumed is not None]
    if resumed:
        facts = {"resumed_from_trial": resumed[0].trial, "resumed_epochs": min(r.epochs for r in resumed)}
        trial.set_attrs(facts)
        trial.set_tags({f"harness.{key}": value for key, value in facts.items()})


def _conclude(trial: Trial, ctx: WorkerContext, runs: list[SeedRun], summaries: list[RunSummary],
              judge: EpochJudge) -> None:
    """The trial's outcome from its seeds' summaries: diverged or unfinished seeds fail it, a pruned
    group prunes it, else it completes with the seeds' mean final PSNR."""
    diverged = [(run, s) for run, s in zip(runs, summaries) if s.status == "diverged"]
    unfinished = [s for s in summaries if s.status != "completed"]
    if diverged:
        run, summary = diverged[0]
        trial.fail(summary.message if len(runs) == 1 else f"seed {run.seed} {summary.message}")
    elif judge.pruned_at is not None and all(s.status == "stopped" for s in summaries):
        value = float(np.mean([s.val_psnr for s in summaries]))
        trial.prune(f"pruned after epoch {judge.pruned_at + 1} at {value:.2f} dB")
    elif unfinished:
        trial.fail(unfinished[0].message)
    elif not all(math.isfinite(s.final_val_psnr) for s in summaries):
        trial.fail("no final validation PSNR")
    else:
        if len(runs) > 1:
            _record_seeds(trial, runs, summaries)
        trial.complete(float(np.mean([s.final_val_psnr for s in summaries])))


def _record_seeds(trial: Trial, runs: list[SeedRun], summaries: list[RunSummary]) -> None:
    """A trial with several seeds: each seed's value and the seeds' spread, in both stores;
    the seeds' mean curves and final metrics in the trial's run; its best seed, whose
    checkpoint `harness best` exports."""
    values = [s.final_val_psnr for s in summaries]
    interval = mean_interval(values)
    best = runs[int(np.argmax(values))]
    trial.set_attrs({"seed_values": values, "value_ci95": interval.half_width, "best_seed": best.seed})
    trial.set_tags({"harness.best_seed": best.seed})
    finals = mean_metrics([final_metrics(s) for s in summaries])
    if math.isfinite(interval.half_width):
        finals[f"{final_metric()}_ci95"] = interval.half_width
    trial.log_metrics(finals)
    per_seed = [curve_series(s) for s in summaries]
    tracker = trial.parts.tracker
    for key in per_seed[0]:
        tracker.log_series(trial.run_id, key, np.nanmean([series[key] for series in per_seed], axis=0).tolist())
    write_seed_plot(summaries, [run.seed for run in runs], trial.trial_dir)
    tracker.log_files(trial.run_id, trial.trial_dir)


def _record_facts(trial: Trial, runs: list[SeedRun], summaries: list[RunSummary] | None, started: float,
                  first_epoch: int) -> None:
    """Trial facts reports need, in both stores: epochs, PSNRs, time (of this attempt), the shares of
    validation and of the harness's overhead, over all seeds. Without summaries (training stopped by
    an exception), from the epochs the trainers published."""
    wall = time.perf_counter() - started
    trainers = [run.trainer for run in runs]
    new_records = [t.records[first_epoch:] for t in trainers]
    training = sum(r.seconds for records in new_records for r in records)
    validation = sum(r.val_seconds for records in new_records for r in records)
    if summaries is not None:
        validation += sum(s.final_val_seconds + s.baseline_seconds for s in summaries)
    overhead = max(0.0, wall - training - validation)    # what training and validation did not spend
    epochs = min(t.epoch for t in trainers)
    per_epoch = [float(np.mean([t.records[e].val_psnr for t in trainers])) for e in range(epochs)]
    facts = {"epochs_run": epochs, "best_val_psnr": max(per_epoch, default=math.nan),
             "last_val_psnr": per_epoch[-1] if per_epoch else math.nan,
             "trial_seconds": wall, "overhead_seconds": overhead, "overhead_share": overhead / max(wall, 1e-9),
             "validation_seconds": validation, "validation_share": validation / max(wall, 1e-9)}
    if summaries is not None and all(s.completed for s in summaries):
        for region in REGIONS:      # NaN, so left out, on data without masks
            value = float(np.mean([s.final(region) for s in summaries]))
            if math.isfinite(value):
                facts[final_metric(region)] = value
    # Checkpoint uploads, which a retry on a worker without the runs folder resumes from, as a share
    # of the training time they follow.
    uploads = sum(run.logger.upload_seconds for run in runs)
    facts |= {"checkpoint_upload_seconds": uploads, "checkpoint_upload_share": uploads / max(training, 1e-9)}
    trial.record(facts)


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
