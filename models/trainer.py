"""Training loop for the CVAE: schedules, validation rollouts, checkpoints, resume.

Knows nothing of Optuna or MLflow: the harness plugs in through `Callback`.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from .checkpoint import CHECKPOINT_FORMAT, atomic_copy, atomic_torch_save, config_from_checkpoint, load_checkpoint
from .checkpoint_files import BEST_CHECKPOINT, LAST_CHECKPOINT
from .config import TrainConfig
from .cvae import VideoCVAE
from .augment import add_noise, recolour
from .data import DanceData, to_unit
from .execution import Execution
from .metrics import mean_rollout_psnr
from .schedules import KLAnnealing, TeacherForcing
from .seeds import stream_seed
from .validation import Validation


class Callback:
    """Hooks the trainer calls; override what you need. Call `trainer.request_stop(reason)` to stop."""

    def on_train_start(self, trainer: "Trainer") -> None: ...

    def on_epoch_start(self, trainer: "Trainer") -> None: ...

    def on_step_end(self, trainer: "Trainer", step: int, steps: int, loss: float) -> None: ...

    def on_epoch_end(self, trainer: "Trainer", metrics: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: "Trainer", result: "TrainResult") -> None: ...


@dataclass
class TrainResult:
    status: str                      # "completed", "stopped" or "diverged"
    epochs_run: int
    message: str
    val_psnr: float                  # mean over frames 1..T-1 of the last per-epoch validation
    best_val_psnr: float
    history: list[dict] = field(default_factory=list)
    final_val_psnr: float = math.nan  # the full val_vi_len rollout after the last epoch (completed runs only)
    final_val_seconds: float = 0.0
    final_val_psnr_figure: float = math.nan       # the same rollout over the figure's pixels (data with masks)
    final_val_psnr_background: float = math.nan   # ... and over the rest


def loss_terms(config: TrainConfig, pred: torch.Tensor, target: torch.Tensor,
               kl_per_step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reconstruction and KL terms of a batch, each summed over the steps 1..T-1.

    pred, target: [B, T-1, 3, H, W]; kl_per_step: [T-1], the lab's KL (summed over the latent
    elements, divided by the batch size). Reconstruction is a mean over pixels of the squared
    (mse) or absolute (l1) error; kl_reduction "mean" divides the KL by the latent's N x H x W
    elements, which puts it on the reconstruction's per-pixel scale."""
    error = pred - target
    recon = (error.abs() if config.recon_loss == "l1" else error.pow(2)).mean(dim=(0, 2, 3, 4)).sum()
    kl = kl_per_step.sum()
    if config.kl_reduction == "mean":
        kl = kl / (config.n_dim * config.height * config.width)
    return recon, kl


class Diverged(RuntimeError):
    pass


class Batch(NamedTuple):
    frames: torch.Tensor        # [B, T, 3, H, W], the targets (colour-augmented when configured)
    poses: torch.Tensor
    inputs: torch.Tensor        # the frames the model is conditioned on (noisy with input_noise)
    forced: bool                # teacher forced
    eps: torch.Tensor           # the latent noise, VideoCVAE.latent_noise


@dataclass
class EpochTally:
    start: float
    totals: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    forced_batches: int = 0
    skipped: int = 0
    failed_in_a_row: int = 0
    rewinds: int = 0


# Non-finite steps in a row after which the weights, not one batch, are to blame: the trainer goes
# back to the state it had at the start of the epoch and goes on with the next batch.
REWIND_AFTER = 2


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Trains a VideoCVAE on `data`; writes checkpoints under `run_dir/checkpoints` when given."""

    def __init__(self, config: TrainConfig, data: DanceData, run_dir: str | Path | None = None,
                 callbacks: list[Callback] | tuple[Callback, ...] = ()):
        self.config = config
        self.device = resolve_device(config.device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks)

        torch.manual_seed(config.seed)
        self.execution = Execution.default_for(self.device, config.d_out_dim, config.height, config.width)
        self.model = self.execution.prepare(VideoCVAE.from_config(config).to(self.device))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        # With `ema`, the weights' moving average is the model that is scored and exported.
        self.averaged = copy.deepcopy(self.model).requires_grad_(False) if config.ema else None
        self.averaged_steps = 0
        self.kl_annealing = KLAnnealing(config.kl_anneal_type, config.epochs,
                                        config.kl_anneal_cycle, config.kl_anneal_ratio)
        self.teacher_forcing = TeacherForcing(config.tfr, config.tfr_sde, config.tfr_d_step)
        # Separate streams: batch order and teacher-forcing draws on the CPU,
        # latent noise on the training device. Both are saved in checkpoints.
        self.sampler = torch.Generator().manual_seed(stream_seed(config.seed, "order"))
        self.noise = torch.Generator(device=self.device).manual_seed(stream_seed(config.seed, "noise"))

        self.train_img, self.train_label = data.train_runs(config.train_vi_len, config.partial)
        self.validation = Validation(config, data, self.device, self.execution)

        self.epoch = 0                          # epochs completed
        self.history: list[dict] = []
        self.baselines: dict[str, list[float]] = {}
        # Per baseline, its PSNR per frame by region (REGIONS); empty without masks, like the next one.
        self.region_baselines: dict[str, dict[str, list[float]]] = {}
        self.val_psnr_per_frame: list[float] = []
        self.val_region_psnr_per_frame: dict[str, list[float]] = {}
        self.best_val_psnr = -math.inf
        self.baseline_seconds = 0.0
        self.last_rollout: torch.Tensor | None = None   # uint8 [T, 3, H, W], first val sequence
        self.last_val_mse = math.nan    # the last rollout's MSE over predicted frames: the validation loss
        self._order: torch.Tensor | None = None     # this epoch's batch order (begin_epoch)
        self._tally: EpochTally | None = None       # this epoch's running sums
        self._epoch_start_state: dict | None = None  # weights and optimizer at the start of this epoch
        self._stop_reason: str | None = None
        self._outcome: tuple[str, str] | None = None     # (status, message) once the run has ended early

    @classmethod
    def resume(cls, checkpoint: str | Path, data: DanceData, run_dir: str | Path | None = None,
               callbacks: list[Callback] | tuple[Callback, ...] = ()) -> "Trainer":
        """A trainer restored from a checkpoint; `fit()` continues where it stopped."""
        state = load_checkpoint(checkpoint)
        trainer = cls(config_from_checkpoint(state, checkpoint), data, run_dir, callbacks)
        trainer.load_state_dict(state)
        return trainer

    # -- control -------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Ask the trainer to stop after the current epoch (used by pruning callbacks); a run
        whose last epoch is done completes."""
        self._stop_reason = reason

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_img) / self.config.batch_size)

    # -- training ------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until `config.epochs` epochs are done (continuing after a resume)."""
        self.start()
        while self.running:
            self.advance()
        return self.finish()

    # `fit` in three parts, so that a caller can step several trainers in lockstep
    # (the seeds of one trial) and decide between their epochs.
    def start(self) -> None:
        """Score the baselines (on a fresh run) and tell the callbacks that training starts."""
        if self.epoch == 0 and self.config.baselines and not self.baselines:
            start = time.perf_counter()
            self.baselines, self.region_baselines = self.validation.baselines(self.scored_model)
            self.baseline_seconds = time.perf_counter() - start
        self._outcome = None
        for callback in self.callbacks:
            callback.on_train_start(self)

    @property
    def running(self) -> bool:
        return self._outcome is None and self._stop_reason is None and self.epoch < self.config.epochs

    @property
    def diverged(self) -> bool:
        return self._outcome is not None and self._outcome[0] == "diverged"

    def advance(self) -> None:
        """Train and validate one epoch, checkpoint it, and call the epoch callbacks."""
        self.epoch_started()
        try:
            metrics = self.train_epoch()
        except Diverged as err:
            self.stop_diverged(err)
            return
        self.epoch_trained(metrics)

    # `advance` in parts, so that a packed trainer (models.packed_trainer) can run the training
    # passes of several trainers as one and leave everything else to each of them.
    def epoch_started(self) -> None:
        for callback in self.callbacks:
            callback.on_epoch_start(self)

    def stop_diverged(self, err: Diverged) -> None:
        self._outcome = ("diverged", str(err))

    def epoch_trained(self, metrics: dict[str, float]) -> None:
        """Validate the epoch just trained, step the schedules, checkpoint, call the epoch callbacks."""
        val_start = time.perf_counter()
        per_frame, regions = self.validate(self.epoch_val_len)
        metrics["val_psnr"] = mean_rollout_psnr(per_frame)
        metrics |= {f"val_psnr_{name}": mean_rollout_psnr(curve, skip_nan=True) for name, curve in regions.items()}
        metrics["val_mse"] = self.last_val_mse
        metrics["val_frames"] = self.epoch_val_len
        metrics["val_seconds"] = time.perf_counter() - val_start
        self.keep_curves(per_frame, regions)
        self.history.append(metrics)
        self.kl_annealing.step()
        self.teacher_forcing.step()
        self.epoch += 1
        improved = metrics["val_psnr"] > self.best_val_psnr
        self.best_val_psnr = max(self.best_val_psnr, metrics["val_psnr"])
        self.save_checkpoints(improved)
        for callback in self.callbacks:
            callback.on_epoch_end(self, metrics)

    def finish(self) -> TrainResult:
        """The run's result, scored on the full rollout when it completed; calls the end callbacks."""
        if self._outcome is not None:
            status, message = self._outcome
        elif self.epoch < self.config.epochs:
            status, message = "stopped", f"stopped after epoch {self.epoch}: {self._stop_reason}"
        else:
            status, message = "completed", f"completed {self.config.epochs} epochs"
        last = self.history[-1]["val_psnr"] if self.history else math.nan
        result = TrainResult(status, self.epoch, message, last, self.best_val_psnr, list(self.history))
        if status == "completed":
            self.final_validation(result)
        for callback in self.callbacks:
            callback.on_train_end(self, result)
        return result

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training runs in a fresh random order."""
        self.begin_epoch()
        for step in range(self.steps_per_epoch):
            batch = self.next_batch(step)
            with self.execution.autocast(self.device):
                pred, kl_per_step = self.model.reconstruct(
                    batch.inputs, batch.poses, batch.forced, frames_per_pass=self.execution.frames_per_pass,
                    detach_feedback=self.config.feedback == "detached", reference=batch.frames[:, 0], eps=batch.eps)
            loss, values = self.loss(batch, pred, kl_per_step)
            finite = bool(torch.isfinite(values).all())
            if finite:
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            self.end_step(step, values, finite)
        return self.end_epoch()

    # -- one training step, in the parts a packed trainer interleaves ----------
    def begin_epoch(self) -> None:
        self.model.train()
        self._order = torch.randperm(len(self.train_img), generator=self.sampler)
        self._tally = EpochTally(start=time.perf_counter())
        self._epoch_start_state = copy.deepcopy(self.weights_state())

    def weights_state(self) -> dict:
        """What an update changes: the weights (and their average) and the optimizer's moments."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                **({"averaged_model": self.averaged.state_dict(), "averaged_steps": self.averaged_steps}
                   if self.averaged is not None else {})}

    def load_weights_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.averaged is not None:
            self.averaged.load_state_dict(state["averaged_model"])
            self.averaged_steps = state["averaged_steps"]

    def next_batch(self, step: int) -> Batch:
        """Step `step`'s batch, its teacher-forcing draw, noisy inputs and latent noise, drawn from
        this run's streams in a fixed order (so that a packed member draws what it would alone)."""
        cfg = self.config
        self.set_learning_rate(self.epoch * self.steps_per_epoch + step)
        idx = self._order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        frames = to_unit(self.train_img[idx], self.device)
        if cfg.colour_augment:
            frames = recolour(frames, self.noise, cfg.colour_augment_share)
        poses = to_unit(self.train_label[idx], self.device)
        # Drawn per batch (the lab drew once per epoch): a smoother mix at tfr in (0, 1).
        forced = bool(torch.rand((), generator=self.sampler) < self.teacher_forcing.ratio)
        self._tally.forced_batches += forced
        inputs = self.noisy(frames)
        return Batch(frames, poses, inputs, forced, self.model.latent_noise(inputs, self.noise))

    def loss(self, batch: Batch, pred: torch.Tensor, kl_per_step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's loss, and [loss, recon, kl] detached in float64 on the CPU."""
        cfg = self.config
        recon, kl = loss_terms(cfg, pred.float(), batch.frames[:, 1:], kl_per_step.float())
        loss = cfg.w_recon * recon + cfg.w_kl * self.kl_annealing.beta * kl
        return loss, torch.stack([loss.detach(), recon.detach(), kl.detach()]).double().cpu()

    def end_step(self, step: int, values: torch.Tensor, finite: bool) -> None:
        """After the backward pass of a finite loss: clip, update, average. An overflow, in the forward
        pass (the gated FFNs multiply activations along a long free-running chain) or in backprop, skips
        the update, as loss scalers do. Two in a row mean the weights themselves have gone bad (one
        update can tip the gated FFNs into overflow on every input): the trainer rewinds to the start of
        the epoch and goes on with the next batch, as large-model training restarts before a loss spike
        and skips the batches that led there. More than a quarter of an epoch's steps skipped diverges."""
        tally, steps = self._tally, self.steps_per_epoch
        if finite:
            finite = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                                        self.config.grad_clip)))
        if finite:
            self.optimizer.step()
            self.update_average()
            tally.totals += values
            tally.failed_in_a_row = 0
        else:
            tally.skipped += 1
            tally.failed_in_a_row += 1
            if tally.skipped > max(1, steps // 4):
                raise Diverged(f"diverged at epoch {self.epoch + 1}, step {step + 1}: non-finite loss or "
                               f"gradients in {tally.skipped} of {step + 1} steps, {tally.rewinds} rewind(s) to "
                               f"the epoch's start (last: loss={values[0].item():.4g} recon={values[1].item():.4g} "
                               f"kl={values[2].item():.4g})")
            if tally.failed_in_a_row == REWIND_AFTER:
                self.load_weights_state(self._epoch_start_state)
                tally.rewinds += 1
                tally.failed_in_a_row = 0
        for callback in self.callbacks:
            callback.on_step_end(self, step, steps, values[0].item())

    def end_epoch(self) -> dict[str, float]:
        tally, steps = self._tally, self.steps_per_epoch
        means = (tally.totals / max(1, steps - tally.skipped)).tolist()
        return {
            "epoch": self.epoch, "loss": means[0], "recon": means[1], "kl": means[2],
            "beta": self.kl_annealing.beta, "tfr": self.teacher_forcing.ratio,
            "teacher_forced": tally.forced_batches / steps, "skipped_steps": tally.skipped,
            "rewinds": tally.rewinds,
            "lr": self.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - tally.start,
        }

    def learning_rate(self, global_step: int) -> float:
        """The learning rate of a training step: linear warm-up, then constant or cosine to 0."""
        cfg = self.config
        rate = cfg.lr * min(1.0, (global_step + 1) / cfg.lr_warmup) if cfg.lr_warmup else cfg.lr
        if cfg.lr_schedule == "cosine":
            total = cfg.epochs * self.steps_per_epoch
            rate *= 0.5 * (1 + math.cos(math.pi * global_step / total))
        return rate

    @property
    def scored_model(self) -> VideoCVAE:
        """The model validation rolls out and checkpoints export: the weights' average with `ema`."""
        return self.averaged if self.averaged is not None else self.model

    @torch.no_grad()
    def update_average(self) -> None:
        """One step of the weights' moving average; its decay ramps up over the first steps
        ((1 + n) / (10 + n), capped at `ema`) so that the average does not remember the init."""
        if self.averaged is None:
            return
        self.averaged_steps += 1
        decay = min(self.config.ema, (1 + self.averaged_steps) / (10 + self.averaged_steps))
        for mine, theirs in zip(self.averaged.parameters(), self.model.parameters()):
            mine.lerp_(theirs, 1 - decay)
        for mine, theirs in zip(self.averaged.buffers(), self.model.buffers()):   # batch-norm statistics
            mine.copy_(theirs)

    def set_learning_rate(self, global_step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(global_step)

    def noisy(self, frames: torch.Tensor) -> torch.Tensor:
        """The frames the model is conditioned on: with `input_noise`, noisy (augment.add_noise)."""
        return add_noise(frames, self.config.input_noise, self.noise) if self.config.input_noise else frames

    # -- validation ----------------------------------------------------------
    @property
    def epoch_val_len(self) -> int:
        return self.config.val_epoch_len or self.config.val_vi_len

    def final_validation(self, result: TrainResult) -> None:
        """Score the last model on the full val_vi_len rollout (reusing the last epoch's when it was full length)."""
        start = time.perf_counter()
        if self.epoch_val_len < self.config.val_vi_len or self.last_rollout is None:
            self.keep_curves(*self.validate())
        result.final_val_psnr = mean_rollout_psnr(torch.tensor(self.val_psnr_per_frame))
        regions = {name: mean_rollout_psnr(torch.tensor(curve), skip_nan=True)
                   for name, curve in self.val_region_psnr_per_frame.items()}
        result.final_val_psnr_figure = regions.get("figure", math.nan)
        result.final_val_psnr_background = regions.get("background", math.nan)
        result.final_val_seconds = time.perf_counter() - start

    def keep_curves(self, per_frame: torch.Tensor, regions: dict[str, torch.Tensor]) -> None:
        """Keep the latest rollout's PSNR per frame, whole and by region."""
        self.val_psnr_per_frame = per_frame.tolist()
        self.val_region_psnr_per_frame = {name: curve.tolist() for name, curve in regions.items()}

    def validate(self, length: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scored model's PSNR per frame [T] over the first `length` validation frames (all by
        default), averaged over the sequences, and the same by region; keeps its rollout and MSE."""
        score = self.validation.score(self.scored_model, length)
        self.last_rollout, self.last_val_mse = score.first_rollout, score.mse
        return score.per_frame, score.regions

    # -- checkpoints ---------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            **self.weights_state(),
            "kl_annealing": self.kl_annealing.state_dict(),
            "teacher_forcing": self.teacher_forcing.state_dict(),
            "rng": {"sampler": self.sampler.get_state(), "noise": self.noise.get_state(),
                    "torch": torch.get_rng_state()},
            "history": self.history,
            "baselines": self.baselines,
            "region_baselines": self.region_baselines,
            "val_psnr_per_frame": self.val_psnr_per_frame,
            "val_region_psnr_per_frame": self.val_region_psnr_per_frame,
            "best_val_psnr": self.best_val_psnr,
        }

    def load_state_dict(self, state: dict) -> None:
        self.load_weights_state(state)
        self.kl_annealing.load_state_dict(state["kl_annealing"])
        self.teacher_forcing.load_state_dict(state["teacher_forcing"])
        self.sampler.set_state(state["rng"]["sampler"])
        self.noise.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        self.baselines = dict(state["baselines"])
        self.val_psnr_per_frame = list(state["val_psnr_per_frame"])
        # Checkpoints from before masked PSNR have neither.
        self.region_baselines = dict(state.get("region_baselines", {}))
        self.val_region_psnr_per_frame = dict(state.get("val_region_psnr_per_frame", {}))
        self.best_val_psnr = state["best_val_psnr"]

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.run_dir / "checkpoints" if self.run_dir is not None else None

    def save_checkpoints(self, improved: bool) -> None:
        if self.checkpoint_dir is None:
            return
        last = self.checkpoint_dir / LAST_CHECKPOINT
        atomic_torch_save(self.state_dict(), last)
        if improved:
            atomic_copy(last, self.checkpoint_dir / BEST_CHECKPOINT)
