"""What a training run publishes, and the hooks that hear it. No torch: readers (the harness's run
folder, progress lines, MLflow logging) import this module and never the trainer.

The trainer sends, in order: one `RunStart`; per epoch, `on_epoch_start`, a `StepRecord` after each
training step and one `EpochRecord`; one `RunSummary` at the end. Each record is frozen: a callback
keeps what it needs of them, and never reads the trainer's attributes (as Lightning's callbacks read
`callback_metrics`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .config import TrainConfig

# The checkpoint files a run keeps in its folder's checkpoints/ (the last epoch's, the best one's).
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
# Where a per-frame PSNR is computed over part of the frame (data with figure masks).
REGIONS = ("figure", "background")
# The names of the curves a rollout is drawn with: the trained model's, and the two baselines every
# model is scored beside (repeating the given frame 0; the untrained model of the same seed).
MODEL = "model"
REPEAT_FIRST_FRAME = "repeat first frame"
UNTRAINED_MODEL = "untrained model"
BASELINES = (REPEAT_FIRST_FRAME, UNTRAINED_MODEL)


@dataclass(frozen=True)
class Curves:
    """PSNR per frame of one rollout (frame 0, the given frame, first): over the whole frame, and over
    each of REGIONS where the data has masks (NaN in a frame where the region is empty)."""
    whole: tuple[float, ...]
    regions: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, whole: Any, regions: Mapping[str, Any] | None = None) -> Curves:
        """From lists, arrays or tensors (anything iterable over floats)."""
        return cls(tuple(float(v) for v in whole), {name: tuple(float(v) for v in curve)
                                                    for name, curve in (regions or {}).items()})

    def mean(self, region: str | None = None) -> float:
        """The mean over the predicted frames 1..T-1; a region's skips frames without a value."""
        values = np.asarray((self.whole if region is None else self.regions.get(region, ()))[1:], dtype=float)
        if region is not None:
            values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else math.nan


@dataclass(frozen=True)
class RunStart:
    """What a run is about to do: its config, where it runs, its data, and what it restored."""
    config: TrainConfig
    device: str
    parameters: int
    train_sequences: int
    steps_per_epoch: int
    val_sequences: int
    epoch_val_len: int                   # frames of the per-epoch validation rollout
    records: tuple[EpochRecord, ...]     # epochs restored from a checkpoint (empty on a fresh run)
    baselines: Mapping[str, Curves]      # the references every model is drawn beside; empty when not scored
    checkpoint_dir: Path | None          # where the epoch's checkpoint lies when on_epoch_end is called
    masks: bool                          # the validation data has figure masks (region curves exist)

    @property
    def first_epoch(self) -> int:
        """Epochs already trained (a resumed run)."""
        return len(self.records)


@dataclass(frozen=True)
class StepRecord:
    """One training step done. The loss stays on the device until asked for: reading it waits for the
    step to finish, so a caller reads it once per progress line, not once per step."""
    epoch: int                           # the 0-based epoch being trained
    step: int
    steps: int
    frames: int                          # training frames per step (batch x sequence length)
    read_loss: Callable[[], float] = field(repr=False, compare=False)

    @cached_property
    def loss(self) -> float:
        return self.read_loss()


@dataclass(frozen=True)
class EpochRecord:
    """One epoch trained and validated. The losses are means over the epoch's finite steps."""
    epoch: int                           # 0-based
    loss: float
    recon: float
    kl: float
    beta: float
    tfr: float
    teacher_forced: float                # share of the epoch's batches that were teacher forced
    lr: float
    skipped_steps: int                   # steps whose update was skipped (non-finite loss or gradients)
    rewinds: int                         # returns to the epoch's start weights after non-finite steps in a row
    seconds: float                       # training time of the epoch (validation apart)
    val_psnr: float                      # the per-epoch validation rollout's mean PSNR
    val_psnr_figure: float = math.nan    # ... over the figure and the background (data with masks)
    val_psnr_background: float = math.nan
    val_mse: float = math.nan            # the rollout's MSE over the predicted frames: the validation loss
    val_frames: int = 0
    val_seconds: float = 0.0
    curves: Curves | None = field(default=None, compare=False)   # the rollout's PSNR per frame (None: not kept)

    def row(self) -> dict[str, float]:
        """The epoch as a table row (metrics.csv, checkpoints); region columns only where there are values."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "curves"}
        for region in REGIONS:
            if math.isnan(row[f"val_psnr_{region}"]):
                del row[f"val_psnr_{region}"]
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any], curves: Curves | None = None) -> EpochRecord:
        """A row written by `row` (or by an older version, which lacked some keys)."""
        known = {f.name for f in fields(cls)} - {"curves"}
        values = {key: row[key] for key in known if key in row}
        values.setdefault("skipped_steps", 0)
        values.setdefault("rewinds", 0)
        return cls(**values, curves=curves)


@dataclass(frozen=True)
class RolloutFrames:
    """The first validation sequence as rolled out, uint8 [T, 3, H, W], beside its truth and poses."""
    prediction: np.ndarray
    truth: np.ndarray
    poses: np.ndarray


@dataclass(frozen=True)
class Generated:
    """One test sequence rolled out (`harness generate`), uint8 [T, 3, H, W] frames whose frame 0 is the
    given one, beside its poses and its truth (where the data has it) and the PSNR per frame there."""
    index: int
    frames: np.ndarray
    poses: np.ndarray
    truth: np.ndarray | None
    psnr: np.ndarray | None                          # [T'] over the frames that have truth
    region_psnr: Mapping[str, np.ndarray] = field(default_factory=dict)   # by REGIONS, where masks exist


@dataclass(frozen=True)
class RunSummary:
    """How a run ended, with what readers draw and log from it."""
    status: str                          # "completed", "stopped" or "diverged"
    message: str
    epochs: int                          # the config's
    records: tuple[EpochRecord, ...]
    best_val_psnr: float
    curves: Curves | None                # PSNR per frame of the last rollout (the final one, when completed)
    baselines: Mapping[str, Curves]
    baseline_seconds: float              # the time scoring the baselines took (0 when restored)
    rollout: RolloutFrames | None
    final_val_seconds: float = 0.0
    masks: bool = False

    @property
    def epochs_run(self) -> int:
        return len(self.records)

    @property
    def val_psnr(self) -> float:
        """The last per-epoch validation's mean PSNR."""
        return self.records[-1].val_psnr if self.records else math.nan

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def final(self, region: str | None = None) -> float:
        """The final full-length rollout's mean PSNR (over a region with `region`); NaN unless completed."""
        return self.curves.mean(region) if self.completed and self.curves is not None else math.nan

    @property
    def final_val_psnr(self) -> float:
        return self.final()

    @property
    def final_val_psnr_figure(self) -> float:
        return self.final("figure")

    @property
    def final_val_psnr_background(self) -> float:
        return self.final("background")

    @property
    def validation_seconds(self) -> float:
        """Time in validation rollouts: every epoch's, the final one, the baselines."""
        return sum(r.val_seconds for r in self.records) + self.final_val_seconds + self.baseline_seconds

    @property
    def training_seconds(self) -> float:
        return sum(r.seconds for r in self.records)


class Callback:
    """Hooks a trainer calls with what it publishes; override what you need."""

    def on_train_start(self, start: RunStart) -> None: ...

    def on_epoch_start(self, epoch: int) -> None: ...

    def on_step_end(self, step: StepRecord) -> None: ...

    def on_epoch_end(self, record: EpochRecord) -> None: ...

    def on_train_end(self, summary: RunSummary) -> None: ...
