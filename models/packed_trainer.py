"""Several trainers trained as one packed model: each step's training passes of all members run as one
batched pass (models.packing); everything else (data order, noise, teacher-forcing draws, schedules,
loss weights, learning rate, optimizer, clipping, validation, checkpoints, callbacks) stays each
member's own Trainer's. A member that diverges or stops leaves the pack without disturbing the others.
"""
from __future__ import annotations

import torch

from .packing import PackedModels
from .trainer import Diverged, Trainer, TrainResult


# The config keys that make up a model's architecture and the shapes of a training pass.
ARCHITECTURE_KEYS = ("f_dim", "l_dim", "n_dim", "d_out_dim", "output", "first_frame", "first_pose", "previous_pose",
                     "appearance_attention", "appearance_colours", "background_plate")
SHAPE_KEYS = ("height", "width", "batch_size", "train_vi_len")


def pack_key(trainer: Trainer) -> tuple:
    """Trainers with equal keys can share one packed pass: the same architecture (one template
    runs them all), the same batch shapes and steps per epoch, on one device."""
    config = trainer.config
    return (tuple(getattr(config, key) for key in ARCHITECTURE_KEYS + SHAPE_KEYS), trainer.steps_per_epoch,
            str(trainer.device), trainer.execution)


class PackedTrainer:
    """Trains `trainers`, whose models share one architecture and whose epochs one number of steps."""

    def __init__(self, trainers: list[Trainer]):
        if len({t.steps_per_epoch for t in trainers}) != 1:
            raise ValueError("packed members must have the same number of steps per epoch "
                             "(the same training data, partial and batch size)")
        self.trainers = trainers
        self.packed = PackedModels([t.model for t in trainers])

    def fit(self) -> list[TrainResult]:
        for trainer in self.trainers:
            trainer.start()
        while any(t.running for t in self.trainers):
            self.advance()
        return [t.finish() for t in self.trainers]

    def advance(self) -> None:
        """One epoch of every running member."""
        active = [i for i, t in enumerate(self.trainers) if t.running]
        for i in active:
            self.trainers[i].epoch_started()
            self.trainers[i].begin_epoch()
        for step in range(self.trainers[active[0]].steps_per_epoch):
            active = self._step(step, active)
        for i in active:
            self.trainers[i].epoch_trained(self.trainers[i].end_epoch())

    def _step(self, step: int, active: list[int]) -> list[int]:
        """One training step of the members `active`; returns those that did not diverge in it."""
        batches = {i: self.trainers[i].next_batch(step) for i in active}
        losses, values = {}, {}
        # One batched pass per way of running the decode (teacher forced or not, feedback detached or not).
        groups: dict[tuple[bool, bool], list[int]] = {}
        for i in active:
            groups.setdefault((batches[i].forced, self.trainers[i].config.feedback == "detached"), []).append(i)
        for (forced, detached), members in groups.items():
            stack = lambda field: torch.stack([getattr(batches[i], field) for i in members])   # noqa: E731
            trainer = self.trainers[members[0]]
            with trainer.execution.autocast(trainer.device):
                pred, kl = self.packed.reconstruct(stack("inputs"), stack("poses"), stack("eps"), forced,
                                                   reference=stack("frames")[:, :, 0],
                                                   frames_per_pass=trainer.execution.frames_per_pass,
                                                   detach_feedback=detached, which=members)
            for k, i in enumerate(members):
                losses[i], values[i] = self.trainers[i].loss(batches[i], pred[k], kl[k])
        finite = {i: bool(torch.isfinite(values[i]).all()) for i in active}
        for i in active:
            if finite[i]:
                self.trainers[i].optimizer.zero_grad(set_to_none=True)
        if any(finite.values()):
            # Each member's parameters get the gradient of its own loss only.
            sum(losses[i] for i in active if finite[i]).backward()
        survivors = []
        for i in active:
            try:
                self.trainers[i].end_step(step, values[i], finite[i])
                survivors.append(i)
            except Diverged as err:
                self.trainers[i].stop_diverged(err)
        return survivors
