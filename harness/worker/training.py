"""One trial's training: the CVAE trained with the trial's params, once per seed, judged per epoch.

`TrialTraining` opens a trial's seeds for training and gives its `TrialOwner` the outcome; the owner
records it in both stores. The sweep loop (harness.sweep_loop) decides when the seeds train.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from mlflow.exceptions import MlflowException
from optuna.storages import RetryHeartbeatStaleTrialCallback

from models.checkpoint import CheckpointError, load_checkpoint
from models.checkpoint_files import LAST_CHECKPOINT
from models.config import TrainConfig
from models.data import DanceData
from models.metrics import REGIONS
from models.trainer import Callback, Trainer, TrainResult

from harness.intervals import mean_interval
from harness.outputs.progress import ProgressReporter
from harness.outputs.run_folder import RunOutputs, write_seed_plot
from .signals import StopSignals
from harness.store.locations import Stores
from harness.spec import StudySpec, train_values
from .search import suggest_params
from harness.store.tracking import StudyTracker, baseline_key, mean_epoch_metrics, mean_final_metrics, seed_prefix
from .mlflow_logger import MlflowTrialLogger, final_metrics
from .trial import TrialOwner


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
    stop: StopSignals | None = None     # checked at the trainers' safe points
    checkpoint_every: int = 1           # upload each seed's checkpoint to MLflow after every k-th epoch (0: at the end)


class StopAtSafePoints(Callback):
    """A trainer's safe points for a stop signal: after each training step, and after each epoch's
    checkpoint (the callbacks before this one have recorded the epoch)."""

    def __init__(self, signals: StopSignals):
        self.signals = signals

    def on_step_end(self, trainer: Trainer, step: int, steps: int, loss: float) -> None:
        self.signals.check()

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.signals.check()


class EpochJudge:
    """Judges a trial after each epoch that all its seeds have finished: reports their mean
    validation PSNR (the pruner compares trials by it), logs the seeds' mean metrics when there
    are several, and asks them to stop when the pruner says so. Epochs a retry restored are
    reported, never judged again."""

    def __init__(self, owner: TrialOwner, tracker: StudyTracker, seeds: int, first_new_epoch: int):
        self.owner = owner
        self.tracker = tracker
        self.seeds = seeds
        self.first_new_epoch = first_new_epoch
        self.pruned_at: int | None = None

    def __call__(self, epoch: int, rows: list[dict]) -> str | None:
        self.owner.report(epoch, float(np.mean([row["val_psnr"] for row in rows])))
        if self.seeds > 1:
            self.tracker.log_metrics(self.owner.run_id, mean_epoch_metrics(rows), step=epoch)
        if epoch >= self.first_new_epoch and self.owner.should_prune():
            self.pruned_at = epoch
            return f"pruned by {type(self.owner.study.pruner).__name__}"
        return None


def repeated_trial(owner: TrialOwner, params: dict) -> int | None:
    """The number of an earlier trial with exactly these params, when this trial was sampled
    (enqueued trials and retries repeat on purpose): training it again would only repeat a point."""
    if {"fixed_params", "failed_trial"} & set(owner.stored().system_attrs):
        return None
    for other in owner.study.get_trials(deepcopy=False):
        if other.number != owner.number and other.params == params and "repeat_of" not in other.user_attrs:
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


def earlier_checkpoints(owner: TrialOwner, ctx: SweepContext, folder: Path, prefix: str,
                        scratch: Path) -> Iterator[tuple[int, Path, str]]:
    """Last-epoch checkpoints that earlier attempts at this trial (it is a retry) left for the seed
    whose run lives in `folder`, newest attempt first, as (attempt, file, where it came from).

    For each attempt: its file in this worker's runs directory when there is one (workers that
    share the folder find the newest epoch there), else the copy its MLflow run holds (uploaded
    after every `checkpoint_every` epochs, reachable from any worker), downloaded into `scratch`."""
    history = RetryHeartbeatStaleTrialCallback.retry_history(owner.stored())
    relative = folder.relative_to(owner.trial_dir)
    run_ids = {t.number: t.user_attrs.get("mlflow_run_id") for t in owner.study.get_trials(deepcopy=False)}
    tried_runs = {owner.run_id}
    for number in reversed(history):
        local = ctx.stores.trial_dir(ctx.spec.name, number) / relative / "checkpoints" / LAST_CHECKPOINT
        if local.is_file():
            yield number, local, str(local)
            continue
        run_id = run_ids.get(number)
        if not run_id or run_id in tried_runs:   # an attempt that died before opening its own run
            continue
        tried_runs.add(run_id)
        try:
            downloaded = ctx.tracker.download_checkpoint(run_id, scratch / str(number), prefix)
        except (MlflowException, OSError):      # it died before uploading an epoch
            continue
        yield number, downloaded, f"its MLflow run {run_id}"


def make_trainer(owner: TrialOwner, ctx: SweepContext, config: TrainConfig, folder: Path, prefix: str,
                 callbacks: list[Callback]) -> tuple[Trainer, Resumed | None]:
    """A trainer for one seed of the trial: restored from the newest usable checkpoint of an
    earlier attempt when the trial is a retry, else fresh."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".resume-", dir=folder) as scratch:
        for number, path, where in earlier_checkpoints(owner, ctx, folder, prefix, Path(scratch)):
            try:
                state = load_checkpoint(path)
                changed = _changed_training_keys(state["config"], config.to_dict())
                if changed:
                    raise CheckpointError(f"{where}: its config differs in {', '.join(changed)}")
                trainer = Trainer(config, ctx.data, folder, callbacks)
                trainer.load_state_dict(state)
            except (CheckpointError, KeyError, RuntimeError) as err:   # e.g. saved on another device type
                ctx.echo(f"trial {owner.number}: not resuming: {err}")
                continue
            ctx.echo(f"trial {owner.number}: resuming trial {number} after epoch {trainer.epoch} from {where}")
            return trainer, Resumed(number, trainer.epoch)
    return Trainer(config, ctx.data, folder, callbacks), None


def _changed_training_keys(saved: dict, current: dict) -> list[str]:
    """Config keys that change what training computes (where the data lives and the device do not)."""
    ignored = {"data", "device"}
    return sorted(k for k in saved.keys() | current.keys() if k not in ignored and saved.get(k) != current.get(k))


@dataclass
class SeedRun:
    """One seed of a trial: its training, its folder, whether it resumed an earlier attempt."""
    seed: int
    folder: Path
    trainer: Trainer
    resumed: Resumed | None
    logger: MlflowTrialLogger


class TrialTraining:
    """One trial's seeds, ready to train as one Lockstep group: `begin` opens the trial (params,
    MLflow run, trainers, restored checkpoints); `conclude` gives the owner its outcome from the
    seeds' results, `interrupted` records what was trained when training stopped by an exception."""

    def __init__(self, owner: TrialOwner, ctx: SweepContext, runs: list[SeedRun], started: float):
        self.owner = owner
        self.runs = runs
        self.started = started
        self.ctx = ctx
        self.first_new_epoch = min(run.trainer.epoch for run in runs)
        self.judge = EpochJudge(owner, ctx.tracker, len(runs), self.first_new_epoch)

    @classmethod
    def begin(cls, owner: TrialOwner, ctx: SweepContext) -> TrialTraining | None:
        """The trial's training, or None when the sampler repeated an earlier point (then the
        owner has its outcome: not trained)."""
        started = time.perf_counter()
        params = suggest_params(owner.trial, ctx.spec)
        repeat = repeated_trial(owner, params)
        if repeat is not None:
            owner.skip_repeat(repeat)
            return None
        config = trial_config(ctx, params)
        seeds = trial_seeds(config.seed, ctx.spec.seeds)
        owner.start(config.to_dict(), sorted(params), seeds)
        ctx.echo(f"trial {owner.number}: " + ", ".join(f"{k}={_short(v)}" for k, v in params.items())
                 + (f" (seeds {seeds[0]}..{seeds[-1]})" if len(seeds) > 1 else ""))
        runs = [_seed_run(owner, ctx, config.replace(seed=seed), seed_folder(owner.trial_dir, seed, len(seeds)),
                          len(seeds)) for seed in seeds]
        for run in runs:
            owner.keep_files(run.folder, seed_prefix(run.seed, len(runs)))
        resumed = [run.resumed for run in runs if run.resumed is not None]
        if resumed:
            facts = {"resumed_from_trial": resumed[0].trial, "resumed_epochs": min(r.epochs for r in resumed)}
            owner.set_attrs(facts)
            ctx.tracker.set_tags(owner.run_id, {f"harness.{key}": value for key, value in facts.items()})
        return cls(owner, ctx, runs, started)

    @property
    def trainers(self) -> list[Trainer]:
        return [run.trainer for run in self.runs]

    def interrupted(self) -> None:
        _record(self.owner, self.runs, None, self.started, self.first_new_epoch)

    def conclude(self, results: list[TrainResult]) -> None:
        owner, runs = self.owner, self.runs
        _record(owner, runs, results, self.started, self.first_new_epoch)
        diverged = [(run, result) for run, result in zip(runs, results) if result.status == "diverged"]
        unfinished = [result for result in results if result.status != "completed"]
        if diverged:
            run, result = diverged[0]
            owner.fail(result.message if len(runs) == 1 else f"seed {run.seed} {result.message}")
        elif self.judge.pruned_at is not None and all(result.status == "stopped" for result in results):
            owner.prune(f"pruned after epoch {self.judge.pruned_at + 1} at {trial_value(results, 'val_psnr'):.2f} dB")
        elif unfinished:
            owner.fail(unfinished[0].message)
        elif not all(math.isfinite(result.final_val_psnr) for result in results):
            owner.fail("no final validation PSNR")
        else:
            if len(runs) > 1:
                _record_seeds(owner, self.ctx, runs, results)
            owner.complete(trial_value(results, "final_val_psnr"))


def _seed_run(owner: TrialOwner, ctx: SweepContext, config: TrainConfig, folder: Path, seeds: int) -> SeedRun:
    """One seed's trainer with its callbacks: progress, run folder, MLflow (under `seed_<s>/`
    in the trial's run when the trial has several seeds)."""
    label = f"trial {owner.number}" + (f" seed {config.seed}" if seeds > 1 else "")
    prefix = seed_prefix(config.seed, seeds)
    logger = MlflowTrialLogger(ctx.tracker, owner.run_id, folder, prefix, ctx.checkpoint_every)
    callbacks = [ProgressReporter(prefix=f"  [{label}] "), RunOutputs(folder, ctx.data_root, plots_every_epoch=False),
                 logger]
    if ctx.stop is not None:
        callbacks.append(StopAtSafePoints(ctx.stop))
    trainer, resumed = make_trainer(owner, ctx, config, folder, prefix, callbacks)
    return SeedRun(config.seed, folder, trainer, resumed, logger)


def trial_value(results: list[TrainResult], key: str) -> float:
    """A trial's value of `key`: the mean over its seeds."""
    return float(np.mean([getattr(result, key) for result in results]))


def _record_seeds(owner: TrialOwner, ctx: SweepContext, runs: list[SeedRun], results: list[TrainResult]) -> None:
    """A trial with several seeds: each seed's value and the seeds' spread, in both stores;
    the seeds' mean curves and final metrics in the trial's run; its best seed, whose
    checkpoint `harness best` exports."""
    values = [result.final_val_psnr for result in results]
    interval = mean_interval(values)
    best = runs[int(np.argmax(values))]
    owner.set_attrs({"seed_values": values, "value_ci95": interval.half_width, "best_seed": best.seed})
    ctx.tracker.set_tags(owner.run_id, {"harness.best_seed": best.seed})
    trainers = [run.trainer for run in runs]
    finals = mean_final_metrics([final_metrics(t, r) for t, r in zip(trainers, results)])
    if math.isfinite(interval.half_width):
        finals["final_val_psnr_ci95"] = interval.half_width
    ctx.tracker.log_metrics(owner.run_id, finals)
    for key, curves in _per_frame_curves(trainers).items():
        ctx.tracker.log_series(owner.run_id, key, np.nanmean(curves, axis=0).tolist())
    write_seed_plot(trainers, [run.seed for run in runs], owner.trial_dir)
    ctx.tracker.log_files(owner.run_id, owner.trial_dir)


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


def _record(owner: TrialOwner, runs: list[SeedRun], results: list[TrainResult] | None, started: float,
            first_epoch: int) -> None:
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
        for region in REGIONS:      # NaN, so left out, on data without masks
            facts_region = float(np.mean([getattr(r, f"final_val_psnr_{region}") for r in results]))
            if math.isfinite(facts_region):
                owner.set_attrs({f"final_val_psnr_{region}": facts_region})
    facts = {"epochs_run": epochs, "best_val_psnr": max(per_epoch, default=math.nan),
             "last_val_psnr": per_epoch[-1] if per_epoch else math.nan,
             "trial_seconds": wall, "overhead_seconds": overhead, "overhead_share": overhead / max(wall, 1e-9),
             "validation_seconds": validation, "validation_share": validation / max(wall, 1e-9)}
    # Checkpoint uploads, which a retry on a worker without the runs folder resumes from, as a share
    # of the training time they follow.
    uploads = sum(run.logger.upload_seconds for run in runs)
    facts |= {"checkpoint_upload_seconds": uploads,
              "checkpoint_upload_share": uploads / max(sum(training_seconds(t, first_epoch) for t in trainers), 1e-9)}
    owner.record(facts)


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
