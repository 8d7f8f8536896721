"""Several trainers trained as one packed model: each step's training passes of all members run as one
batched pass (models.packing); everything else (data order, noise, teacher-forcing draws, schedules,
loss weights, learning rate, optimizer, clipping, validation, checkpoints, callbacks) stays each
member's own Trainer's, through its public TrainingSteps. A member that diverges or stops leaves the
pack without disturbing the others.
"""
from __future__ import annotations

import torch

from .packing import PackedModels
from .trainer import Trainer, TrainingStep

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

    def advance(self) -> None:
        """One epoch of every running member: each step's forward and backward once for the pack."""
        members = [i for i, t in enumerate(self.trainers) if t.running]
        epochs = [self.trainers[i].epoch_steps() for i in members]
        with self.trainers[0].settings():      # one setting for all: pack_key includes the execution
            for steps in zip(*epochs):
                self._step(members, list(steps))
            for epoch in epochs:        # zip stops at the first exhausted epoch: end the others too
                for _ in epoch:
                    raise RuntimeError("packed members' epochs have different numbers of steps")

    def _step(self, members: list[int], steps: list[TrainingStep]) -> None:
        """One training step of the members: one batched pass per way of running the decode (teacher
        forced or not, feedback detached or not), one backward of their summed losses."""
        groups: dict[tuple[bool, bool], list[int]] = {}
        for k, step in enumerate(steps):
            groups.setdefault((step.batch.forced, step.batch.detach_feedback), []).append(k)
        losses = []
        for (forced, detached), ks in groups.items():
            stack = lambda field: torch.stack([getattr(steps[k].batch, field) for k in ks])   # noqa: E731
            trainer = self.trainers[members[ks[0]]]
            with trainer.execution.autocast(trainer.device):
                pred, kl = self.packed.reconstruct(stack("inputs"), stack("poses"), stack("eps"), forced,
                                                   reference=stack("frames")[:, :, 0],
                                                   frames_per_pass=trainer.execution.frames_per_pass,
                                                   detach_feedback=detached, which=[members[k] for k in ks])
            losses += [steps[k].loss(pred[j], kl[j]) for j, k in enumerate(ks)]
        for i in members:
            self.trainers[i].optimizer.zero_grad(set_to_none=True)
        # Each member's parameters get the gradient of its own loss only; a member whose loss is not
        # finite gets non-finite gradients, and its step skips its update.
        sum(losses).backward()
        for step in steps:
            step.update()
