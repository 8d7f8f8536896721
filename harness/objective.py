"""The Optuna objective: one trial is one training run of the CVAE, logged to MLflow."""
from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from models.checkpoint import CheckpointError, load_checkpoint
from models.config import TrainConfig
from models.data import DanceData
from models.lockstep import train_in_lockstep
from models.metrics import REGIONS
from models.trainer import LAST_CHECKPOINT, Callback, Trainer, TrainResult

from .intervals import mean_interval
from .progress import ProgressReporter
from .run_outputs import RunOutputs, json_safe, write_seed_plot
from .stores import Stores
from .studies import StudySpec, suggest_params, train_values
from .tracking import StudyTracker, baseline_key, mean_epoch_metrics, mean_final_metrics, seed_prefix
from .trial_logging import MlflowTrialLogger, final_metrics


class TrialFailed(RuntimeError):
    """A trial that ran but produced no usable result (e.g. its loss diverged)."""


@dataclass
class SweepContext:
    """What every trial of one worker shares: the spec, the stores, the data loaded once."""
    spec: StudySpec
    stores: Stores
    tracker: StudyTracker
    data: DanceData
    data_root: Path
    device: str
    seed: int
    echo: Callable[[str], None]
    current_trial: int | None = None    # the trial this worker is running, for Ctrl-C handling


class TrialJudge:
    """Judges a trial after each epoch that all its seeds have finished: reports their mean
    validation PSNR to Optuna (the pruner compares trials by it), logs the seeds' mean
    metrics to the trial's MLflow run when there are several, and asks them to stop when
    the pruner says so. Epochs a retry restored are reported where Optuna lacks them, never
    judged again."""

    def __init__(self, trial: optuna.Trial, ctx: SweepContext, run_id: str, seeds: int, first_new_epoch: int):
        self.trial = trial
        self.ctx = ctx
        self.run_id = run_id
        self.seeds = seeds
        self.first_new_epoch = first_new_epoch
        frozen = stored_trial(trial)
        self.reported = set(frozen.intermediate_values) if frozen else set()
        self.pruned_at: int | None = None

    def __call__(self, epoch: int, rows: list[dict]) -> str | None:
        value = float(np.mean([row["val_psnr"] for row in rows]))
        if epoch not in self.reported:
            self.trial.report(value, step=epoch)
            self.reported.add(epoch)
        if self.seeds > 1:
            self.ctx.tracker.log_metrics(self.run_id, mean_epoch_metrics(rows), step=epoch)
        if epoch >= self.first_new_epoch and self.trial.should_prune():
            self.pruned_at = epoch
            return f"pruned by {type(self.trial.study.pruner).__name__}"
        return None


def stored_trial(trial: optuna.Trial) -> FrozenTrial | None:
    """The running trial as the storage holds it: with the system attrs and intermediate values
    a retry inherited, which `optuna.Trial` does not expose."""
    running = trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return next((t for t in running if t.number == trial.number), None)


def repeated_trial(trial: optuna.Trial, params: dict) -> int | None:
    """The number of an earlier trial with exactly these params, when this trial was sampled
    (enqueued trials and retries repeat on purpose): training it again would only repeat a point."""
    frozen = stored_trial(trial)
    if frozen is None or {"fixed_params", "failed_trial"} & set(frozen.system_attrs):
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
    return trial_dir if seeds == 1 else trial_dir / f"seed-{seed}"


def trial_config(ctx: SweepContext, params: dict) -> TrainConfig:
    values = train_values(ctx.spec, params) | {"data": str(ctx.data_root), "device": ctx.device, "seed": ctx.seed}
    return TrainConfig.from_dict(values)


def validation_seconds(trainer: Trainer, result: TrainResult | None, first_epoch: int = 0) -> float:
    """Time spent in validation rollouts from `first_epoch` on: per epoch, the final one, the baselines."""
    per_epoch = sum(m["val_seconds"] for m in trainer.history[first_epoch:])
    return per_epoch + (result.final_val_seconds if result else 0.0) + trainer.baseline_seconds


def training_seconds(trainer: Trainer, first_epoch: int = 0) -> float:
    """Time spent in training epochs from `first_epoch` on (validation excluded)."""
    return sum(m["seconds"] for m in trainer.history[first_epoch:])


@dataclass
class Resumed:
    trial: int           # the earlier attempt whose checkpoint was restored
    epochs: int          # epochs it had completed


def earlier_checkpoints(trial: optuna.Trial, ctx: SweepContext, folder: Path) -> list[tuple[int, Path]]:
    """Last-epoch checkpoints that earlier attempts at this trial (it is a retry) left for the seed
    whose run lives in `folder`, newest first.

    They are looked up in this worker's runs directory: workers share it (a common volume)
    for a retry to resume where a dead worker stopped."""
    frozen = stored_trial(trial)
    history = RetryHeartbeatStaleTrialCallback.retry_history(frozen) if frozen else []
    relative = folder.relative_to(ctx.stores.trial_dir(ctx.spec.name, trial.number))
    paths = [(n, ctx.stores.trial_dir(ctx.spec.name, n) / relative / "checkpoints" / LAST_CHECKPOINT)
             for n in reversed(history)]
    return [(n, path) for n, path in paths if path.is_file()]


def make_trainer(trial: optuna.Trial, ctx: SweepContext, config: TrainConfig, folder: Path,
                 callbacks: list[Callback]) -> tuple[Trainer, Resumed | None]:
    """A trainer for one seed of the trial: restored from the newest usable checkpoint of an
    earlier attempt when the trial is a retry, else fresh."""
    for number, path in earlier_checkpoints(trial, ctx, folder):
        try:
            state = load_checkpoint(path)
            changed = _changed_training_keys(state["config"], config.to_dict())
            if changed:
                raise CheckpointError(f"{path}: its config differs in {', '.join(changed)}")
            trainer = Trainer(config, ctx.data, folder, callbacks)
            trainer.load_state_dict(state)
        except (CheckpointError, KeyError, RuntimeError) as err:   # e.g. saved on another device type
            ctx.echo(f"trial {trial.number}: not resuming: {err}")
            continue
        ctx.echo(f"trial {trial.number}: resuming trial {number} after epoch {trainer.epoch} from {path}")
        return trainer, Resumed(number, trainer.epoch)
    return Trainer(config, ctx.data, folder, callbacks), None


def _changed_training_keys(saved: dict, current: dict) -> list[str]:
    """Config keys that change what training computes (where the data lives and the device do not)."""
    ignored = {"data", "device"}
    return sorted(k for k in saved.keys() | current.keys() if k not in ignored and saved.get(k) != current.get(k))


def objective(trial: optuna.Trial, ctx: SweepContext) -> float:
    """Train one configuration; returns the mean PSNR of the final full-length validation rollout."""
    ctx.current_trial = trial.number
    try:
        return _train_trial(trial, ctx)
    except optuna.TrialPruned:
        raise
    except KeyboardInterrupt:
        trial.set_user_attr("fail_reason", "interrupted")
        raise
    except Exception as err:   # Optuna records FAIL; keep the reason where reports can read it
        trial.set_user_attr("fail_reason", str(err) if isinstance(err, TrialFailed) else repr(err))
        raise


# A retried trial starts with its predecessor's user attrs; these describe one attempt's outcome.
ATTEMPT_ATTRS = ("fail_reason", "resumed_from_trial", "resumed_epochs")


@dataclass
class SeedRun:
    """One seed of a trial: its training, its folder, whether it resumed an earlier attempt."""
    seed: int
    folder: Path
    trainer: Trainer
    resumed: Resumed | None


def _train_trial(trial: optuna.Trial, ctx: SweepContext) -> float:
    started = time.perf_counter()
    for key in ATTEMPT_ATTRS:
        if key in trial.user_attrs:
            trial.set_user_attr(key, None)
    params = suggest_params(trial, ctx.spec)
    repeat = repeated_trial(trial, params)
    if repeat is not None:
        trial.set_user_attr("repeat_of", repeat)
        raise optuna.TrialPruned(f"repeat of trial {repeat}: not trained")
    config = trial_config(ctx, params)
    seeds = trial_seeds(config.seed, ctx.spec.seeds)
    trial_dir = ctx.stores.trial_dir(ctx.spec.name, trial.number)
    run_id = ctx.tracker.start_trial(trial.number, config.to_dict(), sorted(params))
    trial.set_user_attr("mlflow_run_id", run_id)
    trial.set_user_attr("trial_dir", str(trial_dir))
    trial.set_user_attr("seeds", seeds)
    ctx.echo(f"trial {trial.number}: " + ", ".join(f"{k}={_short(v)}" for k, v in params.items())
             + (f" (seeds {seeds[0]}..{seeds[-1]})" if len(seeds) > 1 else ""))

    runs = [_seed_run(trial, ctx, config.replace(seed=seed), seed_folder(trial_dir, seed, len(seeds)), run_id,
                      len(seeds)) for seed in seeds]
    resumed = [run.resumed for run in runs if run.resumed is not None]
    if resumed:
        trial.set_user_attr("resumed_from_trial", resumed[0].trial)
        trial.set_user_attr("resumed_epochs", min(r.epochs for r in resumed))
        ctx.tracker.set_tags(run_id, {"harness.resumed_from_trial": resumed[0].trial,
                                      "harness.resumed_epochs": min(r.epochs for r in resumed)})
    first_new_epoch = min(run.trainer.epoch for run in runs)
    judge = TrialJudge(trial, ctx, run_id, len(seeds), first_new_epoch)
    trainers = [run.trainer for run in runs]
    try:
        results = train_in_lockstep(trainers, judge)
    except BaseException as err:    # a crash or Ctrl-C: keep what was logged, close the run as failed
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / "error.txt").write_text("".join(traceback.format_exception(err)))
        _record(trial, ctx, run_id, runs, None, started, first_new_epoch)
        ctx.tracker.log_files(run_id, trial_dir)
        if len(runs) > 1:
            for run in runs:
                ctx.tracker.log_files(run_id, run.folder, seed_prefix(run.seed, len(runs)))
        ctx.tracker.end_trial(run_id, "FAIL", "interrupted" if isinstance(err, KeyboardInterrupt) else repr(err))
        raise
    _record(trial, ctx, run_id, runs, results, started, first_new_epoch)
    diverged = [(run, result) for run, result in zip(runs, results) if result.status == "diverged"]
    if diverged:
        run, result = diverged[0]
        message = result.message if len(seeds) == 1 else f"seed {run.seed} {result.message}"
        ctx.tracker.end_trial(run_id, "FAIL", message)
        raise TrialFailed(message)
    if judge.pruned_at is not None and all(result.status == "stopped" for result in results):
        message = f"pruned after epoch {judge.pruned_at + 1} at {trial_value(results, 'val_psnr'):.2f} dB"
        ctx.tracker.end_trial(run_id, "PRUNED", message)
        raise optuna.TrialPruned(message)
    finals = [result.final_val_psnr for result in results]
    if any(result.status != "completed" for result in results) or not all(map(math.isfinite, finals)):
        message = next(result.message for result in results if result.status != "completed") \
            if any(result.status != "completed" for result in results) else "no final validation PSNR"
        ctx.tracker.end_trial(run_id, "FAIL", message)
        raise TrialFailed(message)
    if len(seeds) > 1:
        _record_seeds(trial, ctx, run_id, runs, results, trial_dir)
    ctx.tracker.end_trial(run_id, "COMPLETE")
    return trial_value(results, "final_val_psnr")


def _seed_run(trial: optuna.Trial, ctx: SweepContext, config: TrainConfig, folder: Path, run_id: str,
              seeds: int) -> SeedRun:
    """One seed's trainer with its callbacks: progress, run folder, MLflow (under `seed_<s>/`
    in the trial's run when the trial has several seeds)."""
    label = f"trial {trial.number}" + (f" seed {config.seed}" if seeds > 1 else "")
    callbacks = [ProgressReporter(prefix=f"  [{label}] "),
                 RunOutputs(folder, ctx.data_root, plots_every_epoch=False),
                 MlflowTrialLogger(ctx.tracker, run_id, folder, prefix=seed_prefix(config.seed, seeds))]
    trainer, resumed = make_trainer(trial, ctx, config, folder, callbacks)
    return SeedRun(config.seed, folder, trainer, resumed)


def trial_value(results: list[TrainResult], key: str) -> float:
    """A trial's value of `key`: the mean over its seeds."""
    return float(np.mean([getattr(result, key) for result in results]))


def _record_seeds(trial: optuna.Trial, ctx: SweepContext, run_id: str, runs: list[SeedRun],
                  results: list[TrainResult], trial_dir: Path) -> None:
    """A trial with several seeds: each seed's value and the seeds' spread, in both stores;
    the seeds' mean curves and final metrics in the trial's run; its best seed, whose
    checkpoint `harness best` exports."""
    values = [result.final_val_psnr for result in results]
    interval = mean_interval(values)
    best = runs[int(np.argmax(values))]
    trial.set_user_attr("seed_values", values)
    trial.set_user_attr("value_ci95", json_safe(interval.half_width))
    trial.set_user_attr("best_seed", best.seed)
    ctx.tracker.set_tags(run_id, {"harness.best_seed": best.seed})
    trainers = [run.trainer for run in runs]
    finals = mean_final_metrics([final_metrics(t, r) for t, r in zip(trainers, results)])
    if math.isfinite(interval.half_width):
        finals["final_val_psnr_ci95"] = interval.half_width
    ctx.tracker.log_metrics(run_id, finals)
    for key, curves in _per_frame_curves(trainers).items():
        mean = np.nanmean(curves, axis=0)
        ctx.tracker.log_series(run_id, key, mean.tolist())
    write_seed_plot(trainers, [run.seed for run in runs], trial_dir)
    ctx.tracker.log_files(run_id, trial_dir)


def _per_frame_curves(trainers: list[Trainer]) -> dict[str, np.ndarray]:
    """Each per-frame series a one-seed run logs (the model's, its regions', the baselines'),
    as [seeds, frames], under the same MLflow keys."""
    curves = {"val_psnr_per_frame": [t.val_psnr_per_frame for t in trainers]}
    for region in trainers[0].val_region_psnr_per_frame:
        curves[f"val_psnr_{region}_per_frame"] = [t.val_region_psnr_per_frame[region] for t in trainers]
    for name in trainers[0].baselines:
        curves[f"{baseline_key(name)}_per_frame"] = [t.baselines[name] for t in trainers]
        for region in trainers[0].region_baselines.get(name, {}):
            curves[f"{baseline_key(name, region)}_per_frame"] = [t.region_baselines[name][region] for t in trainers]
    return {key: np.asarray(values, dtype=float) for key, values in curves.items()}


def _record(trial: optuna.Trial, ctx: SweepContext, run_id: str, runs: list[SeedRun],
            results: list[TrainResult] | None, started: float, first_epoch: int) -> None:
    """Trial facts reports need, in both stores: epochs, PSNRs, time (of this attempt), the shares of
    validation and of the harness's overhead, over all seeds."""
    wall = time.perf_counter() - started
    trainers = [run.trainer for run in runs]
    validation = sum(validation_seconds(t, r, first_epoch)
                     for t, r in zip(trainers, results or [None] * len(trainers)))
    # What training and validation did not spend is the harness's own overhead.
    overhead = max(0.0, wall - sum(training_seconds(t, first_epoch) for t in trainers) - validation)
    epochs = min(t.epoch for t in trainers)
    per_epoch = [float(np.mean([t.history[e]["val_psnr"] for t in trainers])) for e in range(epochs)]
    if results is not None and all(r.status == "completed" for r in results):
        for region in REGIONS:      # NaN, so left out below, on data without masks
            facts_region = float(np.mean([getattr(r, f"final_val_psnr_{region}") for r in results]))
            if math.isfinite(facts_region):
                trial.set_user_attr(f"final_val_psnr_{region}", facts_region)
    facts = {"epochs_run": epochs, "best_val_psnr": max(per_epoch, default=math.nan),
             "last_val_psnr": per_epoch[-1] if per_epoch else math.nan,
             "trial_seconds": wall, "overhead_seconds": overhead, "overhead_share": overhead / max(wall, 1e-9),
             "validation_seconds": validation, "validation_share": validation / max(wall, 1e-9)}
    for key, value in json_safe(facts).items():
        trial.set_user_attr(key, value)
    ctx.tracker.log_metrics(run_id, {k: v for k, v in facts.items() if math.isfinite(v)})


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
