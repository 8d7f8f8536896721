"""Several trainings of one configuration, one per seed, stepped one epoch at a time together.

A trial with seeds is judged by the mean of its seeds, after every epoch (a pruner
compares that mean with other trials'), so the seeds cannot run one after another.
Each trainer keeps its own model, optimiser, random streams, checkpoints and callbacks;
this module only decides who trains next and when they all stop.
"""
from __future__ import annotations

from typing import Callable

from .packed_trainer import PackedTrainer
from .trainer import Trainer, TrainResult

# Called once per epoch that every trainer has finished, with each trainer's metrics of that
# epoch; returns a reason to stop them all, or None to go on.
EpochHook = Callable[[int, list[dict]], "str | None"]


def train_in_lockstep(trainers: list[Trainer], on_epoch: EpochHook | None = None, pack: int = 1) -> list[TrainResult]:
    """Train every trainer to its end, epoch by epoch; `on_epoch` sees each epoch once all have it.
    With `pack` > 1 the trainers due for an epoch train it in packs of up to `pack` (PackedTrainer).

    Trainers resumed at different epochs (a worker killed between two of them) catch up
    first. Epochs restored from checkpoints are passed to `on_epoch` too, so that a hook
    that records them (a retried trial's curves) sees the whole run. When one trainer
    diverges, the others stop: a configuration that diverges for one seed is not a result.
    """
    for trainer in trainers:
        trainer.start()
    judged = 0     # epochs passed to on_epoch so far
    while True:
        judged = _judge(trainers, judged, on_epoch)
        running = [t for t in trainers if t.running]
        if not running:
            break
        behind = min(t.epoch for t in running)
        due = [t for t in running if t.epoch == behind]
        for start in range(0, len(due), pack):
            group = due[start:start + pack]
            if len(group) > 1:
                PackedTrainer(group).advance()
            else:
                group[0].advance()
        diverged = [t for t in trainers if t.diverged]
        if diverged:
            for trainer in trainers:
                trainer.request_stop(f"seed {diverged[0].config.seed} diverged")
    return [trainer.finish() for trainer in trainers]


def _judge(trainers: list[Trainer], judged: int, on_epoch: EpochHook | None) -> int:
    """Pass each newly finished epoch to the hook; stop everyone when it says so."""
    finished = min(len(t.history) for t in trainers)
    for epoch in range(judged, finished):
        reason = on_epoch(epoch, [t.history[epoch] for t in trainers]) if on_epoch else None
        if reason:
            for trainer in trainers:
                trainer.request_stop(reason)
    return max(judged, finished)
