"""The Optuna objective: one trial is one training run of the CVAE, logged to MLflow."""
from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from models.checkpoint import CheckpointError, load_checkpoint
from models.config import TrainConfig
from models.data import DanceData
from models.trainer import LAST_CHECKPOINT, Callback, Trainer, TrainResult

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

    def on_train_start(self, trainer: Trainer) -> None:
        # A resumed trial's restored epochs: most came with the retry, the last may not have.
        frozen = stored_trial(self.trial)
        done = frozen.intermediate_values if frozen else {}
        for row in trainer.history:
            if int(row["epoch"]) not in done:
                self.trial.report(row["val_psnr"], step=int(row["epoch"]))

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        epoch = int(metrics["epoch"])
        self.trial.report(metrics["val_psnr"], step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.request_stop(f"pruned by {type(self.trial.study.pruner).__name__}")


def stored_trial(trial: optuna.Trial) -> FrozenTrial | None:
    """The running trial as the storage holds it: with the system attrs and intermediate values
    a retry inherited, which `optuna.Trial` does not expose."""
    running = trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return next((t for t in running if t.number == trial.number), None)


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


def earlier_checkpoints(trial: optuna.Trial, ctx: SweepContext) -> list[tuple[int, Path]]:
    """Last-epoch checkpoints left by earlier attempts at this trial (it is a retry), newest first.

    They are looked up in this worker's runs directory: workers share it (a common volume)
    for a retry to resume where a dead worker stopped."""
    frozen = stored_trial(trial)
    history = RetryHeartbeatStaleTrialCallback.retry_history(frozen) if frozen else []
    paths = [(n, ctx.stores.trial_dir(ctx.spec.name, n) / "checkpoints" / LAST_CHECKPOINT) for n in reversed(history)]
    return [(n, path) for n, path in paths if path.is_file()]


def make_trainer(trial: optuna.Trial, ctx: SweepContext, config: TrainConfig, trial_dir: Path,
                 callbacks: list[Callback]) -> tuple[Trainer, Resumed | None]:
    """A trainer for the trial: restored from the newest usable checkpoint of an earlier attempt
    when the trial is a retry, else fresh."""
    for number, path in earlier_checkpoints(trial, ctx):
        try:
            state = load_checkpoint(path)
            changed = _changed_training_keys(state["config"], config.to_dict())
            if changed:
                raise CheckpointError(f"{path}: its config differs in {', '.join(changed)}")
            trainer = Trainer(config, ctx.data, trial_dir, callbacks)
            trainer.load_state_dict(state)
        except (CheckpointError, KeyError, RuntimeError) as err:   # e.g. saved on another device type
            ctx.echo(f"trial {trial.number}: not resuming: {err}")
            continue
        ctx.echo(f"trial {trial.number}: resuming trial {number} after epoch {trainer.epoch - 1} from {path}")
        return trainer, Resumed(number, trainer.epoch)
    return Trainer(config, ctx.data, trial_dir, callbacks), None


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


def _train_trial(trial: optuna.Trial, ctx: SweepContext) -> float:
    started = time.perf_counter()
    for key in ATTEMPT_ATTRS:
        if key in trial.user_attrs:
            trial.set_user_attr(key, None)
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
    trainer, resumed = make_trainer(trial, ctx, config, trial_dir, callbacks)
    if resumed is not None:
        trial.set_user_attr("resumed_from_trial", resumed.trial)
        trial.set_user_attr("resumed_epochs", resumed.epochs)
        ctx.tracker.set_tags(run_id, {"harness.resumed_from_trial": resumed.trial,
                                      "harness.resumed_epochs": resumed.epochs})
    first_epoch = resumed.epochs if resumed else 0
    result: TrainResult | None = None
    try:
        result = trainer.fit()
    except BaseException as err:    # a crash or Ctrl-C: keep what was logged, close the run as failed
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / "error.txt").write_text("".join(traceback.format_exception(err)))
        _record(trial, ctx, run_id, trainer, None, started, first_epoch)
        ctx.tracker.log_files(run_id, trial_dir)
        ctx.tracker.end_trial(run_id, "FAIL", "interrupted" if isinstance(err, KeyboardInterrupt) else repr(err))
        raise
    _record(trial, ctx, run_id, trainer, result, started, first_epoch)
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
            result: TrainResult | None, started: float, first_epoch: int) -> None:
    """Trial facts reports need, in both stores: epochs, PSNRs, time (of this attempt), the shares of
    validation and of the harness's overhead."""
    wall = time.perf_counter() - started
    validation = validation_seconds(trainer, result, first_epoch)
    # What training and validation did not spend is the harness's own overhead.
    overhead = max(0.0, wall - training_seconds(trainer, first_epoch) - validation)
    facts = {"epochs_run": trainer.epoch, "best_val_psnr": trainer.best_val_psnr,
             "last_val_psnr": trainer.history[-1]["val_psnr"] if trainer.history else math.nan,
             "trial_seconds": wall, "overhead_seconds": overhead, "overhead_share": overhead / max(wall, 1e-9),
             "validation_seconds": validation, "validation_share": validation / max(wall, 1e-9)}
    for key, value in json_safe(facts).items():
        trial.set_user_attr(key, value)
    ctx.tracker.log_metrics(run_id, {k: v for k, v in facts.items() if math.isfinite(v)})


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
