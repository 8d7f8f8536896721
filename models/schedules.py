"""KL-weight (beta) and teacher-forcing schedules, stepped once per epoch.

Both are pure functions of the epoch index e (0-based) with closed forms, so
their state is just the epoch; the classes keep `step()` / `state_dict()` so
a trainer drives them like any other stateful schedule and a checkpoint
restores them.

KL beta over a run of E epochs (M = n_cycle, R = ratio):
  None:       beta(e) = 1
  Monotonic:  beta(e) = min(1, e / (R * E))                  (one linear ramp)
  Cyclical:   P = E / M, tau = (e mod P) / P,
              beta(e) = min(1, tau / R)                      (M ramps, each over
                                                             the first R of its cycle)
  Sigmoid:    x = e / (R * E), beta(e) = 1 / (1 + exp(-SIGMOID_STEEPNESS * (x - 1/2)))
              (a smooth S over the same span as Monotonic, 1/2 at its middle)
Teacher forcing, starting ratio r0, decay start S, step d:
  tfr(e) = max(0, r0 - d * max(0, e - S + 1))
  i.e. epochs 0..S-1 use r0 and each epoch from S on is d lower (the lab's
  update after each epoch once the epoch counter reaches S).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

SIGMOID_STEEPNESS = 12.0


@dataclass(frozen=True)
class KLSchedule:
    """One KL-annealing schedule: beta(epoch, epochs, n_cycle, ratio)."""
    beta: Callable[[int, int, int, float], float]


def _none(epoch: int, epochs: int, n_cycle: int, ratio: float) -> float:
    return 1.0


def _monotonic(epoch: int, epochs: int, n_cycle: int, ratio: float) -> float:
    return min(1.0, epoch / (ratio * epochs))


def _cyclical(epoch: int, epochs: int, n_cycle: int, ratio: float) -> float:
    period = epochs / n_cycle
    tau = math.fmod(epoch, period) / period
    return min(1.0, tau / ratio)


def _sigmoid(epoch: int, epochs: int, n_cycle: int, ratio: float) -> float:
    x = epoch / (ratio * epochs)
    return 1.0 / (1.0 + math.exp(-SIGMOID_STEEPNESS * (x - 0.5)))


# The one place that lists KL schedules: the config's choices, the CLI help and the report's colours
# read from it. A new schedule is one function above and one line here.
KL_SCHEDULES: dict[str, KLSchedule] = {
    "None": KLSchedule(_none),
    "Monotonic": KLSchedule(_monotonic),
    "Cyclical": KLSchedule(_cyclical),
    "Sigmoid": KLSchedule(_sigmoid),
}


def kl_beta(kind: str, epoch: int, epochs: int, n_cycle: int = 1, ratio: float = 1.0) -> float:
    """Closed-form beta of epoch `epoch` (0-based) in a run of `epochs` epochs."""
    if kind not in KL_SCHEDULES:
        raise ValueError(f"unknown KL anneal type {kind!r}")
    return KL_SCHEDULES[kind].beta(epoch, epochs, n_cycle, ratio)


def teacher_forcing_ratio(epoch: int, start: float, decay_start: int, decay_step: float) -> float:
    """Closed-form teacher-forcing ratio of epoch `epoch` (0-based)."""
    return max(0.0, start - decay_step * max(0, epoch - decay_start + 1))


class EpochSchedule:
    """A value that is a function of the epoch; `step()` once at each epoch's end."""

    def __init__(self) -> None:
        self.epoch = 0

    def step(self) -> None:
        self.epoch += 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])


class KLAnnealing(EpochSchedule):
    """Beta of the current epoch."""

    def __init__(self, kind: str, epochs: int, n_cycle: int = 1, ratio: float = 1.0):
        super().__init__()
        kl_beta(kind, 0, epochs, n_cycle, ratio)  # reject an unknown kind now, not mid-run
        self.kind, self.epochs, self.n_cycle, self.ratio = kind, epochs, n_cycle, ratio

    @property
    def beta(self) -> float:
        return kl_beta(self.kind, self.epoch, self.epochs, self.n_cycle, self.ratio)


class TeacherForcing(EpochSchedule):
    """Teacher-forcing ratio of the current epoch."""

    def __init__(self, start: float, decay_start: int, decay_step: float):
        super().__init__()
        self.start, self.decay_start, self.decay_step = start, decay_start, decay_step

    @property
    def ratio(self) -> float:
        return teacher_forcing_ratio(self.epoch, self.start, self.decay_start, self.decay_step)
