"""Checkpoint files: atomic writes and validated reads."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from .config import TrainConfig
from .errors import CheckpointError, ConfigError
from .cvae import VideoCVAE
from .execution import Execution

CHECKPOINT_FORMAT = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())    # mkstemp makes files private; give them the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: object, path: Path) -> None:
    _atomic_write(Path(path), lambda handle: torch.save(obj, handle))


def atomic_copy(src: Path, dst: Path) -> None:
    def copy(handle) -> None:
        with open(src, "rb") as source:
            shutil.copyfileobj(source, handle)
    _atomic_write(Path(dst), copy)


def load_checkpoint(path: str | Path) -> dict:
    """Read a trainer checkpoint (tensors and plain values only: weights_only loading)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a file that is not a checkpoint
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(err).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise CheckpointError(f"{path}: not a harness checkpoint (format {CHECKPOINT_FORMAT} expected)")
    return state


def config_from_checkpoint(state: dict, path: str | Path) -> TrainConfig:
    try:
        return TrainConfig.from_dict(state["config"])
    except (ConfigError, KeyError) as err:
        raise CheckpointError(f"{path}: bad config in checkpoint: {err}") from None


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[VideoCVAE, TrainConfig]:
    """The model of a checkpoint (its weights' average with `ema`), in eval mode on `device` with the device's
    execution defaults (models/execution.py), with its config."""
    state = load_checkpoint(path)
    config = config_from_checkpoint(state, path)
    model = VideoCVAE.from_config(config)
    # The scored model: the weights' moving average when the run kept one (`ema`).
    model.load_state_dict(state.get("averaged_model", state["model"]))
    device = torch.device(device)
    return Execution.for_run(config, device).prepare(model.to(device)).eval(), config
