"""One training run in a folder, outside any study: what `harness train` does."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from harness.outputs.progress import ProgressReporter
from harness.outputs.run_folder import RunOutputs
from models.config import TrainConfig
from models.data import load_dance_data
from models.records import RunSummary
from models.trainer import Trainer

from .datasets import frames_cache_dir, resolve_data_root


def train_in_folder(config: TrainConfig, run_dir: Path, echo: Callable[[str], None],
                    checkpoint: Path | None = None) -> RunSummary:
    """Train `config` (from `checkpoint` when given) with progress lines and the run folder's files."""
    root = resolve_data_root(config.data, config.height, config.width, progress=echo)
    started = time.perf_counter()
    dataset = load_dance_data(root, height=config.height, width=config.width, train_vi_len=config.train_vi_len,
                              val_vi_len=config.val_vi_len, cache_dir=frames_cache_dir())
    echo(f"loaded {root} in {time.perf_counter() - started:.1f}s")
    callbacks = [ProgressReporter(), RunOutputs(run_dir, root)]
    if checkpoint is not None:
        trainer = Trainer.resume(checkpoint, dataset, run_dir, callbacks, device=config.device)
        echo(f"resuming {run_dir} at epoch {trainer.epoch + 1}")
    else:
        trainer = Trainer(config, dataset, run_dir, callbacks)
    try:
        return trainer.fit()
    except KeyboardInterrupt:
        echo(f"\ninterrupted: checkpoints up to epoch {trainer.epoch} are kept; "
             f"continue with: harness train --out {run_dir} --resume")
        raise
