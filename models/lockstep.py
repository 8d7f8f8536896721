"""Trainings stepped one epoch at a time together: the seeds of one configuration (a `Lockstep`
group), and with packing several groups (several trials) at once.

A trial with seeds is judged by the mean of its seeds, after every epoch (a pruner
compares that mean with other trials'), so the seeds cannot run one after another.
Each trainer keeps its own model, optimiser, random streams, checkpoints and callbacks;
this module only decides who trains next, with whom in one packed pass, and when a
group stops.
"""
from __future__ import annotations

from typing import Callable, Iterator

from .packed_trainer import PackedTrainer, pack_key
from .records import EpochRecord, RunSummary
from .trainer import Trainer

# Called once per epoch that every trainer of a group has finished, with each trainer's record
# of that epoch; returns a reason to stop them all, or None to go on.
EpochHook = Callable[[int, list[EpochRecord]], "str | None"]


class Lockstep:
    """One group of trainers (the seeds of one configuration) kept at the same epoch; `on_epoch`
    sees each epoch once all of them have it.

    Trainers resumed at different epochs (a worker killed between two of them) catch up
    first. Epochs restored from checkpoints are passed to `on_epoch` too, so that a hook
    that records them (a retried trial's curves) sees the whole run. When one trainer
    diverges, the others stop: a configuration that diverges for one seed is not a result.
    """

    def __init__(self, trainers: list[Trainer], on_epoch: EpochHook | None = None):
        self.trainers = trainers
        self.on_epoch = on_epoch
        self.judged = 0     # epochs passed to on_epoch so far
        for trainer in trainers:
            trainer.start()
        self._judge()

    @property
    def running(self) -> bool:
        return any(t.running for t in self.trainers)

    def due(self) -> list[Trainer]:
        """The running trainers furthest behind: the ones whose next epoch comes now."""
        running = [t for t in self.trainers if t.running]
        behind = min((t.epoch for t in running), default=0)
        return [t for t in running if t.epoch == behind]

    def epoch_done(self) -> None:
        """After the due trainers trained an epoch: stop all on a divergence, judge new epochs."""
        diverged = [t for t in self.trainers if t.diverged]
        if diverged:
            for trainer in self.trainers:
                trainer.request_stop(f"seed {diverged[0].config.seed} diverged")
        self._judge()

    def finish(self) -> list[RunSummary]:
        return [trainer.finish() for trainer in self.trainers]

    def _judge(self) -> None:
        """Pass each newly finished epoch to the hook; stop everyone when it says so."""
        finished = min(t.epoch for t in self.trainers)
        for epoch in range(self.judged, finished):
            reason = self.on_epoch(epoch, [t.records[epoch] for t in self.trainers]) if self.on_epoch else None
            if reason:
                for trainer in self.trainers:
                    trainer.request_stop(reason)
        self.judged = max(self.judged, finished)


class PackFailed(Exception):
    """Errors while training packs of trainers: each failed group (one whose trainer was in a pack
    that raised; its state is past repair) with its error. Groups in other packs went on."""

    def __init__(self, failures: list[tuple[Lockstep, Exception]]):
        super().__init__("; ".join(repr(error) for _, error in failures))
        self.failures = failures


def packs(trainers: list[Trainer], size: int) -> Iterator[list[Trainer]]:
    """The trainers in packs of up to `size` that one packed pass can run: same architecture,
    same training shapes (pack_key), in the order given."""
    by_key: dict[tuple, list[Trainer]] = {}
    for trainer in trainers:
        by_key.setdefault(pack_key(trainer), []).append(trainer)
    for same in by_key.values():
        for start in range(0, len(same), size):
            yield same[start:start + size]


def advance_together(groups: list[Lockstep], pack: int = 1) -> None:
    """One epoch of every running group's due trainers, in packs of up to `pack` (PackedTrainer)."""
    running = [g for g in groups if g.running]
    due = [t for g in running for t in g.due()]
    failures: list[tuple[Lockstep, Exception]] = []
    for members in packs(due, pack):
        try:
            if len(members) > 1:
                PackedTrainer(members).advance()
            else:
                members[0].advance()
        except Exception as err:
            failures += [(g, err) for g in running
                         if all(g is not f for f, _ in failures) and any(t in members for t in g.trainers)]
    failed = [g for g, _ in failures]
    for group in running:
        if group not in failed:
            group.epoch_done()
    if failures:
        raise PackFailed(failures)
