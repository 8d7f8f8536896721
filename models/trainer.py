"""Training loop for the CVAE: schedules, validation rollouts, checkpoints, resume.

Knows nothing of Optuna or MLflow: it publishes what happens as frozen records (models.records) to its
callbacks, and the harness plugs in there. An epoch is a sequence of `TrainingStep`s, the one public
step: a trainer alone runs each step's forward and backward itself (`advance`); a packed trainer
(models.packed_trainer) runs those of several trainers as one pass and leaves the rest to each.

A training step never waits for the device: finite checks, skipped updates, rewinds and loss tallies
are computed there, and read once per epoch (and when a progress line asks for the loss);
tests/unit/models/test_gpu_readiness.py counts the host synchronisations of a step (models.host_syncs).
The run's precision and determinism (models.backends) hold while it computes: inside `fit`, `start`,
`advance` and `finish`, and around a caller's iteration of `epoch_steps` (models.packed_trainer).
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import ContextManager, Iterator, NamedTuple

import torch

from . import compiled
from .augment import add_noise, recolour
from .backends import prepare_process
from .checkpoint import CHECKPOINT_FORMAT, atomic_copy, atomic_torch_save, config_from_checkpoint, load_checkpoint
from .config import TrainConfig
from .cvae import VideoCVAE, initial_model
from .data import DanceData
from .execution import Execution, resolve_device
from .placement import place
from .records import (BEST_CHECKPOINT, LAST_CHECKPOINT, Callback, Curves, EpochRecord, RolloutFrames, RunStart,
                      RunSummary, StepRecord)
from .schedules import KLAnnealing, TeacherForcing
from .seeds import stream_seed
from .validation import Validation

# Non-finite steps in a row after which the weights, not one batch, are to blame: the trainer goes
# back to the state it had at the start of the epoch and goes on with the next batch.
REWIND_AFTER = 2


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


class Batch(NamedTuple):
    frames: torch.Tensor        # [B, T, 3, H, W], the targets (colour-augmented when configured)
    poses: torch.Tensor
    inputs: torch.Tensor        # the frames the model is conditioned on (noisy with input_noise)
    forced: bool                # teacher forced
    eps: torch.Tensor           # the latent noise, VideoCVAE.latent_noise
    detach_feedback: bool       # without teacher forcing, feed predictions back without their gradient


class _Tally:
    """An epoch's running sums, on the device: losses of the finite steps, counts of finite, skipped and
    bad-in-a-row steps, rewinds."""

    def __init__(self, device: torch.device):
        # float64 sums where the device has it; float32 on Apple's MPS, which does not
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sums = torch.zeros(3, dtype=dtype, device=device)           # loss, recon, kl
        self.counts = torch.zeros(4, dtype=torch.int64, device=device)   # finite, skipped, bad in a row, rewinds

    def add(self, values: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        """Count one step (`ok`: its update was made); returns whether it is time to rewind."""
        self.sums += torch.where(ok, values, torch.zeros_like(values)).to(self.sums.dtype)
        bad = (~ok).long()
        self.counts[0] += ok.long()
        self.counts[1] += bad
        self.counts[2] = (self.counts[2] + 1) * bad
        rewind = self.counts[2] >= REWIND_AFTER
        self.counts[3] += rewind.long()
        self.counts[2] *= (~rewind).long()
        return rewind

    def read(self) -> tuple[list[float], int, int]:
        """(mean loss, recon, kl over the finite steps, skipped steps, rewinds): the epoch's one read."""
        counts = self.counts.tolist()
        means = (self.sums / max(1, counts[0])).tolist()
        return means, counts[1], counts[3]


class TrainingStep:
    """One step of an epoch: its batch; `loss` from the forward pass run by the caller; after the caller's
    backward, `update` clips, updates (skipped when the loss or a gradient is not finite), averages,
    counts, and rewinds to the epoch's start after REWIND_AFTER bad steps in a row."""

    def __init__(self, epoch: _Epoch, step: int, batch: Batch):
        self.epoch = epoch
        self.step = step
        self.batch = batch
        self._values: torch.Tensor | None = None
        self.updated = False

    def loss(self, pred: torch.Tensor, kl_per_step: torch.Tensor) -> torch.Tensor:
        """The step's loss (to backpropagate) from the forward pass's prediction and KL per step."""
        trainer = self.epoch.trainer
        config = trainer.config
        recon, kl = loss_terms(config, pred.float(), self.batch.frames[:, 1:], kl_per_step.float())
        loss = config.w_recon * recon + config.w_kl * trainer.kl_annealing.beta * kl
        self._values = torch.stack([loss.detach(), recon.detach(), kl.detach()])
        return loss

    def update(self) -> None:
        if self._values is None:
            raise RuntimeError("TrainingStep.update before loss: call loss(), backpropagate it, then update()")
        trainer, values = self.epoch.trainer, self._values
        norm = torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.config.grad_clip)
        ok = torch.isfinite(values).all() & torch.isfinite(norm)
        trainer.optimizer.found_inf = (~ok).float()     # fused Adam skips the update on the device
        trainer.optimizer.step()
        trainer.update_average(ok)
        self.epoch.rewind_if(self.epoch.tally.add(values, ok))
        self.updated = True
        record = StepRecord(trainer.epoch, self.step, trainer.steps_per_epoch, trainer.frames_per_step,
                            read_loss=lambda: float(values[0]))
        for callback in trainer.callbacks:
            callback.on_step_end(record)


class _Epoch:
    """One epoch of a trainer, as its steps in order (see `Trainer.epoch_steps`)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.started = time.perf_counter()
        self.tally = _Tally(trainer.device)
        state = trainer.state_tensors()                         # updated in place through the epoch
        # Floating-point state rewinds in one foreach call; batch norm's integer counters one by one.
        self.state = [t for t in state if t.is_floating_point()]
        self.counters = [t for t in state if not t.is_floating_point()]
        self.start_state = [t.clone() for t in self.state]      # where a rewind goes back to
        self.start_counters = [t.clone() for t in self.counters]
        self.forced_batches = 0

    def rewind_if(self, rewind: torch.Tensor) -> None:
        """Back to the epoch's start where `rewind` (on the device) holds; else nothing changes."""
        # state * (1 - r) + start * r with r 0 or 1 is exactly one of the two (both finite: no update writes
        # a non-finite value). Foreach ops that take r as a tensor: a lerp would read it to the host.
        back = rewind.float()
        torch._foreach_mul_(self.state, 1 - back)
        torch._foreach_add_(self.state, torch._foreach_mul(self.start_state, back))
        for counter, start in zip(self.counters, self.start_counters):
            counter.copy_(torch.where(rewind, start, counter))

    def __iter__(self) -> Iterator[TrainingStep]:
        for step in range(self.trainer.steps_per_epoch):
            batch = self.trainer.batch(step)
            self.forced_batches += batch.forced
            training_step = TrainingStep(self, step, batch)
            yield training_step
            if not training_step.updated:
                raise RuntimeError(f"step {step} of epoch {self.trainer.epoch + 1} was not updated")


class Trainer:
    """Trains a VideoCVAE on `data`; writes checkpoints under `run_dir/checkpoints` when given."""

    def __init__(self, config: TrainConfig, data: DanceData, run_dir: str | Path | None = None,
                 callbacks: list[Callback] | tuple[Callback, ...] = ()):
        self.config = config
        self.device = resolve_device(config.device)
        prepare_process(self.device, config.deterministic)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks)

        self.execution = Execution.for_run(config, self.device)
        self.model = self.execution.prepare(initial_model(config).to(self.device))
        self._compiled_pass = compiled.training_pass(self.model, config.compile)
        self.optimizer = _optimizer(self.model, config.lr)
        # With `ema`, the weights' moving average is the model that is scored and exported.
        self.averaged = copy.deepcopy(self.model).requires_grad_(False) if config.ema else None
        self.averaged_steps = torch.zeros((), device=self.device)    # finite steps averaged so far
        self.kl_annealing = KLAnnealing(config.kl_anneal_type, config.epochs,
                                        config.kl_anneal_cycle, config.kl_anneal_ratio)
        self.teacher_forcing = TeacherForcing(config.tfr, config.tfr_sde, config.tfr_d_step)
        # Re-seeded at each epoch's start (models.seeds): batch order and teacher-forcing draws on the
        # CPU, latent noise and augmentation on the training device.
        self.sampler = torch.Generator()
        self.noise = torch.Generator(device=self.device)

        # The training runs live on the device where they fit (about 47 MB for the lab's data): a batch is
        # then an index; else they stay on the host and each batch is copied over.
        (self.train_img, self.train_label), self.data_on_device = place(
            data.train_runs(config.train_vi_len, config.partial), self.device, "training data")
        self.validation = Validation(config, data, self.device, self.execution)

        self.records: list[EpochRecord] = []
        self.baselines: dict[str, Curves] = {}
        self.baseline_seconds = 0.0
        self.curves: Curves | None = None               # the last rollout's PSNR per frame
        self.best_val_psnr = -math.inf
        self.last_rollout: torch.Tensor | None = None   # uint8 [T, 3, H, W], first validation sequence
        self.last_val_mse = math.nan
        self._order: torch.Tensor | None = None         # this epoch's batch order, on the device
        self._forced: list[bool] = []                   # this epoch's teacher-forcing draws
        self._stop_reason: str | None = None
        self._outcome: tuple[str, str] | None = None    # (status, message) once the run has ended early

    @classmethod
    def resume(cls, checkpoint: str | Path, data: DanceData, run_dir: str | Path | None = None,
               callbacks: list[Callback] | tuple[Callback, ...] = (), device: str | None = None) -> Trainer:
        """A trainer restored from a checkpoint; `fit()` continues where it stopped, on `device` when
        given (a run started on a GPU goes on on a CPU, and back), else on the run's own."""
        state = load_checkpoint(checkpoint)
        config = config_from_checkpoint(state, checkpoint)
        trainer = cls(config if device is None else config.replace(device=device), data, run_dir, callbacks)
        trainer.load_state_dict(state)
        return trainer

    # -- control -------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return len(self.records)

    def request_stop(self, reason: str) -> None:
        """Stop after the current epoch (a pruner, a diverged seed of the same trial); a run whose
        last epoch is done completes."""
        self._stop_reason = reason

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_img) / self.config.batch_size)

    @property
    def frames_per_step(self) -> int:
        return self.config.batch_size * self.config.train_vi_len

    @property
    def running(self) -> bool:
        return self._outcome is None and self._stop_reason is None and self.epoch < self.config.epochs

    @property
    def diverged(self) -> bool:
        return self._outcome is not None and self._outcome[0] == "diverged"

    # -- a run: start, epochs, finish ----------------------------------------
    def fit(self) -> RunSummary:
        """Train until `config.epochs` epochs are done (continuing after a resume)."""
        self.start()
        while self.running:
            self.advance()
        return self.finish()

    def start(self) -> None:
        """Score the baselines (on a fresh run) and publish the run's start."""
        if self.epoch == 0 and self.config.baselines and not self.baselines:
            started = time.perf_counter()
            with self.settings():
                self.baselines = self.validation.baselines(self.scored_model)
            self.baseline_seconds = time.perf_counter() - started
        self._outcome = None
        start = RunStart(self.config, str(self.device), sum(p.numel() for p in self.model.parameters()),
                         len(self.train_img), self.steps_per_epoch, len(self.validation.images), self.epoch_val_len,
                         tuple(self.records), dict(self.baselines), self.checkpoint_dir,
                         self.validation.masks is not None)
        for callback in self.callbacks:
            callback.on_train_start(start)

    def training_pass(self, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's training pass (VideoCVAE.reconstruct), compiled with `compile: step`."""
        return (self._compiled_pass or self.model.reconstruct)(*args, **kwargs)

    def settings(self) -> ContextManager:
        """The run's precision and determinism, set for a block (models.backends)."""
        return self.execution.settings(self.device)

    def advance(self) -> None:
        """One epoch alone: each step's forward and backward here, the rest in its TrainingStep."""
        with self.settings():
            for step in self.epoch_steps():
                batch = step.batch
                with self.execution.autocast(self.device):
                    pred, kl_per_step = self.training_pass(
                        batch.inputs, batch.poses, batch.forced, frames_per_pass=self.execution.frames_per_pass,
                        detach_feedback=batch.detach_feedback, reference=batch.frames[:, 0], eps=batch.eps)
                loss = step.loss(pred, kl_per_step)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                step.update()

    def epoch_steps(self) -> Iterator[TrainingStep]:
        """The next epoch as its training steps, in order; each must be updated before the next comes.
        After the last, the epoch is validated, checkpointed and published (unless it diverged).
        Iterate it under `settings()`."""
        self._draw_epoch()
        for callback in self.callbacks:
            callback.on_epoch_start(self.epoch)
        epoch = _Epoch(self)
        yield from epoch
        self._end_epoch(epoch)

    def finish(self) -> RunSummary:
        """The run's summary, scored on the full rollout when it completed; published to the callbacks."""
        if self._outcome is not None:
            status, message = self._outcome
        elif self.epoch < self.config.epochs:
            status, message = "stopped", f"stopped after epoch {self.epoch}: {self._stop_reason}"
        else:
            status, message = "completed", f"completed {self.config.epochs} epochs"
        with self.settings():
            final_seconds = self._final_validation() if status == "completed" else 0.0
        summary = RunSummary(status, message, self.config.epochs, tuple(self.records), self.best_val_psnr,
                             self.curves, dict(self.baselines), self.baseline_seconds, self._rollout_frames(),
                             final_seconds, self.validation.masks is not None)
        for callback in self.callbacks:
            callback.on_train_end(summary)
        return summary

    # -- inside an epoch -----------------------------------------------------
    def _draw_epoch(self) -> None:
        """The epoch's batch order and teacher-forcing draws (CPU), and its noise stream (device)."""
        self.model.train()
        self.sampler.manual_seed(stream_seed(self.config.seed, "order", self.epoch))
        self.noise.manual_seed(stream_seed(self.config.seed, "noise", self.epoch))
        order = torch.randperm(len(self.train_img), generator=self.sampler)
        self._order = order.to(self.device, non_blocking=True) if self.data_on_device else order
        # Drawn per batch (the lab drew once per epoch): a smoother mix at tfr in (0, 1).
        draws = torch.rand(self.steps_per_epoch, generator=self.sampler)
        self._forced = (draws < self.teacher_forcing.ratio).tolist()

    def batch(self, step: int) -> Batch:
        """Step `step`'s batch, noisy inputs and latent noise, drawn from this run's streams in a fixed
        order (so that a packed member draws what it would alone)."""
        cfg = self.config
        self.set_learning_rate(self.epoch * self.steps_per_epoch + step)
        idx = self._order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        frames = self._gathered(self.train_img, idx).float().div_(255.0)
        if cfg.colour_augment:
            frames = recolour(frames, self.noise, cfg.colour_augment_share)
        poses = self._gathered(self.train_label, idx).float().div_(255.0)
        inputs = add_noise(frames, cfg.input_noise, self.noise) if cfg.input_noise else frames
        return Batch(frames, poses, inputs, self._forced[step], self.model.latent_noise(inputs, self.noise),
                     cfg.feedback == "detached")

    def _gathered(self, runs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The runs `idx` on the device: an index where the data lives there, else a copy that does not
        wait (from pinned memory on CUDA)."""
        if self.data_on_device:
            return runs[idx]
        batch = runs[idx]
        return (batch.pin_memory() if self.device.type == "cuda" else batch).to(self.device, non_blocking=True)

    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor an update changes, in a fixed order: weights and batch-norm statistics, the
        optimizer's moments and step counts, the weights' average and its step count."""
        tensors = [p.data for p in self.model.parameters()] + list(self.model.buffers())
        for p in self.model.parameters():
            tensors += [value for value in self.optimizer.state[p].values() if torch.is_tensor(value)]
        if self.averaged is not None:
            tensors += [p.data for p in self.averaged.parameters()] + list(self.averaged.buffers())
        return tensors + [self.averaged_steps]

    def _end_epoch(self, epoch: _Epoch) -> None:
        """Diverge on too many skipped steps; else validate, step the schedules, checkpoint, publish."""
        (loss, recon, kl), skipped, rewinds = epoch.tally.read()
        steps = self.steps_per_epoch
        seconds = time.perf_counter() - epoch.started
        if skipped > max(1, steps // 4):
            self._outcome = ("diverged", f"diverged at epoch {self.epoch + 1}: non-finite loss or gradients in "
                                         f"{skipped} of {steps} steps, {rewinds} rewind(s) to the epoch's start")
            return
        val_started = time.perf_counter()
        score = self.validation.score(self.scored_model, self.epoch_val_len)
        self.curves, self.last_rollout, self.last_val_mse = score.curves, score.first_rollout, score.mse
        record = EpochRecord(
            epoch=self.epoch, loss=loss, recon=recon, kl=kl, beta=self.kl_annealing.beta,
            tfr=self.teacher_forcing.ratio, teacher_forced=epoch.forced_batches / steps,
            lr=self.optimizer.param_groups[0]["lr"], skipped_steps=skipped, rewinds=rewinds, seconds=seconds,
            val_psnr=score.curves.mean(), val_psnr_figure=score.curves.mean("figure"),
            val_psnr_background=score.curves.mean("background"), val_mse=score.mse, val_frames=self.epoch_val_len,
            val_seconds=time.perf_counter() - val_started, curves=score.curves)
        self.records.append(record)
        self.kl_annealing.step()
        self.teacher_forcing.step()
        improved = record.val_psnr > self.best_val_psnr
        self.best_val_psnr = max(self.best_val_psnr, record.val_psnr)
        self.save_checkpoints(improved)
        for callback in self.callbacks:
            callback.on_epoch_end(record)

    def learning_rate(self, global_step: int) -> float:
        """The learning rate of a training step: linear warm-up, then constant or cosine to 0."""
        cfg = self.config
        rate = cfg.lr * min(1.0, (global_step + 1) / cfg.lr_warmup) if cfg.lr_warmup else cfg.lr
        if cfg.lr_schedule == "cosine":
            total = cfg.epochs * self.steps_per_epoch
            rate *= 0.5 * (1 + math.cos(math.pi * global_step / total))
        return rate

    def set_learning_rate(self, global_step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(global_step)

    @property
    def scored_model(self) -> VideoCVAE:
        """The model validation rolls out and checkpoints export: the weights' average with `ema`."""
        return self.averaged if self.averaged is not None else self.model

    @torch.no_grad()
    def update_average(self, ok: torch.Tensor) -> None:
        """One step of the weights' moving average, made only when the step's update was (`ok`, on the
        device); its decay ramps up over the first steps ((1 + n) / (10 + n), capped at `ema`) so that
        the average does not remember the init."""
        if self.averaged is None:
            return
        self.averaged_steps += ok.float()
        decay = torch.clamp((1 + self.averaged_steps) / (10 + self.averaged_steps), max=self.config.ema)
        # average += (model - average) * weight, in foreach ops that take the weight as a device tensor
        # (a foreach lerp takes it as a number: a read to the host every step).
        averaged = list(self.averaged.parameters())
        steps = torch._foreach_sub(list(self.model.parameters()), averaged)
        torch._foreach_mul_(steps, (1 - decay) * ok.float())
        torch._foreach_add_(averaged, steps)
        torch._foreach_copy_(list(self.averaged.buffers()), list(self.model.buffers()))  # batch-norm statistics

    # -- validation ----------------------------------------------------------
    @property
    def epoch_val_len(self) -> int:
        return self.config.val_epoch_len or self.config.val_vi_len

    def _final_validation(self) -> float:
        """Score the last model on the full val_vi_len rollout (reusing the last epoch's when it was full
        length); returns the seconds it took."""
        started = time.perf_counter()
        if self.epoch_val_len < self.config.val_vi_len or self.last_rollout is None:
            score = self.validation.score(self.scored_model)
            self.curves, self.last_rollout, self.last_val_mse = score.curves, score.first_rollout, score.mse
        return time.perf_counter() - started

    def _rollout_frames(self) -> RolloutFrames | None:
        if self.last_rollout is None:
            return None
        truth, poses = self.validation.first_sequence(self.last_rollout.shape[0])
        return RolloutFrames(self.last_rollout.numpy(), truth.numpy(), poses.numpy())

    # -- checkpoints ---------------------------------------------------------
    def state_dict(self) -> dict:
        curves = self.curves or Curves(())
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **({"averaged_model": self.averaged.state_dict(), "averaged_steps": int(self.averaged_steps)}
               if self.averaged is not None else {}),
            "kl_annealing": self.kl_annealing.state_dict(),
            "teacher_forcing": self.teacher_forcing.state_dict(),
            "history": [record.row() for record in self.records],
            "baselines": {name: list(c.whole) for name, c in self.baselines.items()},
            "region_baselines": {name: {r: list(v) for r, v in c.regions.items()}
                                 for name, c in self.baselines.items() if c.regions},
            "val_psnr_per_frame": list(curves.whole),
            "val_region_psnr_per_frame": {r: list(v) for r, v in curves.regions.items()},
            "best_val_psnr": self.best_val_psnr,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint's state, written on any device (load_checkpoint maps it to the CPU; each
        tensor goes to this trainer's device here). Random streams are re-seeded per epoch, so none is
        restored (older checkpoints' "rng" entries, of whichever device wrote them, are ignored)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # The saved groups' options replace this optimizer's: a checkpoint from before fused Adam would
        # turn it off, and only fused Adam skips a step on the device (found_inf).
        for group in self.optimizer.param_groups:
            group.update(fused=self.optimizer.defaults["fused"], foreach=self.optimizer.defaults["foreach"])
        if self.averaged is not None:
            self.averaged.load_state_dict(state["averaged_model"])
            self.averaged_steps.fill_(state["averaged_steps"])
        self.kl_annealing.load_state_dict(state["kl_annealing"])
        self.teacher_forcing.load_state_dict(state["teacher_forcing"])
        # Checkpoints from before masked PSNR have no region curves.
        regions = state.get("region_baselines", {})
        self.baselines = {name: Curves.of(whole, regions.get(name)) for name, whole in state["baselines"].items()}
        self.curves = Curves.of(state["val_psnr_per_frame"], state.get("val_region_psnr_per_frame"))
        rows = list(state["history"])
        self.records = [EpochRecord.from_row(row, self.curves if i == len(rows) - 1 else None)
                        for i, row in enumerate(rows)]
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


def _optimizer(model: VideoCVAE, lr: float) -> torch.optim.Adam:
    """Adam, fused: it skips a step on the device when told `found_inf`. Its state is made at once (a
    skipped step), so that an epoch's start can be kept and rewound to from the first step on."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.found_inf = torch.ones((), device=next(model.parameters()).device)
    optimizer.step()
    del optimizer.found_inf
    optimizer.zero_grad(set_to_none=True)
    return optimizer
