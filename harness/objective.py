"""The Optuna objective: one trial is one training run of the CVAE, logged to MLflow."""
from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna

from models.config import TrainConfig
from models.data import DanceData
from models.trainer import Callback, Trainer, TrainResult

from .progress import ProgressReporter
from .run_outputs import RunOutputs, json_safe
from .stores import Stores
from .studies import StudySpec, suggest_params, train_values
from .tracking import MlflowTrialLogger, StudyTracker


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


class OptunaPruning(Callback):
    """Reports each epoch's validation PSNR to the trial and stops training when the pruner says so."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial
        self.pruned_at: int | None = None

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        epoch = int(metrics["epoch"])
        self.trial.report(metrics["val_psnr"], step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.request_stop(f"pruned by {type(self.trial.study.pruner).__name__}")


def trial_config(ctx: SweepContext, params: dict) -> TrainConfig:
    values = train_values(ctx.spec, params) | {"data": str(ctx.data_root), "device": ctx.device, "seed": ctx.seed}
    return TrainConfig.from_dict(values)


def compute_seconds(trainer: Trainer, result: TrainResult | None) -> float:
    """Time spent training and validating (the rest of a trial is the harness's overhead)."""
    spent = sum(m["seconds"] + m["val_seconds"] for m in trainer.history)
    return spent + (result.final_val_seconds if result else 0.0) + trainer.baseline_seconds


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


def _train_trial(trial: optuna.Trial, ctx: SweepContext) -> float:
    started = time.perf_counter()
    params = suggest_params(trial, ctx.spec)
    config = trial_config(ctx, params)
    trial_dir = ctx.stores.trial_dir(ctx.spec.name, trial.number)
    run_id = ctx.tracker.start_trial(trial.number, config.to_dict(), sorted(params))
    trial.set_user_attr("mlflow_run_id", run_id)
    trial.set_user_attr("trial_dir", str(trial_dir))
    ctx.echo(f"trial {trial.number}: " + ", ".join(f"{k}={_short(v)}" for k, v in params.items()))

    pruning = OptunaPruning(trial)
    callbacks = [ProgressReporter(prefix=f"  [trial {trial.number}] "),
                 RunOutputs(trial_dir, ctx.data_root, plots_every_epoch=False),
                 pruning,
                 MlflowTrialLogger(ctx.tracker, run_id, trial_dir)]
    trainer = Trainer(config, ctx.data, trial_dir, callbacks)
    result: TrainResult | None = None
    try:
        result = trainer.fit()
    except BaseException as err:    # a crash or Ctrl-C: keep what was logged, close the run as failed
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / "error.txt").write_text("".join(traceback.format_exception(err)))
        _record(trial, ctx, run_id, trainer, None, started)
        ctx.tracker.log_files(run_id, trial_dir)
        ctx.tracker.end_trial(run_id, "FAIL", "interrupted" if isinstance(err, KeyboardInterrupt) else repr(err))
        raise
    _record(trial, ctx, run_id, trainer, result, started)
    if pruning.pruned_at is not None and result.status == "stopped":
        message = f"pruned after epoch {pruning.pruned_at} at {result.val_psnr:.2f} dB"
        ctx.tracker.end_trial(run_id, "PRUNED", message)
        raise optuna.TrialPruned(message)
    if result.status != "completed" or not math.isfinite(result.final_val_psnr):
        ctx.tracker.end_trial(run_id, "FAIL", result.message)
        raise TrialFailed(result.message)
    ctx.tracker.end_trial(run_id, "COMPLETE")
    return result.final_val_psnr


def _record(trial: optuna.Trial, ctx: SweepContext, run_id: str, trainer: Trainer,
            result: TrainResult | None, started: float) -> None:
    """Trial facts reports need, in both stores: epochs, PSNRs, time, the harness's overhead."""
    wall = time.perf_counter() - started
    overhead = max(0.0, wall - compute_seconds(trainer, result))
    facts = {"epochs_run": trainer.epoch, "best_val_psnr": trainer.best_val_psnr,
             "last_val_psnr": trainer.history[-1]["val_psnr"] if trainer.history else math.nan,
             "trial_seconds": wall, "overhead_seconds": overhead, "overhead_share": overhead / max(wall, 1e-9)}
    for key, value in json_safe(facts).items():
        trial.set_user_attr(key, value)
    ctx.tracker.log_metrics(run_id, {k: v for k, v in facts.items() if math.isfinite(v)})


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
