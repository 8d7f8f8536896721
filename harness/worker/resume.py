"""A retried trial resumes where its earlier attempt stopped: from that attempt's last checkpoint, found
in this worker's runs folder or, from any worker, in the attempt's MLflow run."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from mlflow.exceptions import MlflowException
from optuna.storages import RetryHeartbeatStaleTrialCallback

from harness.outputs.names import CHECKPOINTS_DIR, LAST_CHECKPOINT
from models.checkpoint import CheckpointError, config_from_checkpoint, load_checkpoint
from models.config import TrainConfig
from models.data import DanceData
from models.records import Callback
from models.trainer import Trainer

from .trial import Trial

# Config keys that do not change what training computes: where the data lives and the device.
NOT_COMPUTED = ("data", "device")


@dataclass(frozen=True)
class Resumed:
    trial: int           # the earlier attempt whose checkpoint was restored
    epochs: int          # epochs it had completed


def earlier_checkpoints(trial: Trial, folder: Path, prefix: str, scratch: Path) -> Iterator[tuple[int, Path, str]]:
    """Last-epoch checkpoints that earlier attempts at this trial (it is a retry) left for the seed
    whose run lives in `folder`, newest attempt first, as (attempt, file, where it came from).

    For each attempt: its file in this worker's runs folder when there is one (workers that share
    the folder find the newest epoch there), else the copy its MLflow run holds (uploaded after
    every `checkpoint_every` epochs, reachable from any worker), downloaded into `scratch`."""
    history = RetryHeartbeatStaleTrialCallback.retry_history(trial.stored())
    relative = folder.relative_to(trial.trial_dir)
    run_ids = {t.number: t.user_attrs.get("mlflow_run_id") for t in trial.study.get_trials(deepcopy=False)}
    tried_runs = {trial.run_id}
    for number in reversed(history):
        local = trial.parts.trial_dir(number) / relative / CHECKPOINTS_DIR / LAST_CHECKPOINT
        if local.is_file():
            yield number, local, str(local)
            continue
        run_id = run_ids.get(number)
        if not run_id or run_id in tried_runs:   # an attempt that died before opening its own run
            continue
        tried_runs.add(run_id)
        try:
            downloaded = trial.parts.tracker.download_checkpoint(run_id, scratch / str(number), prefix)
        except (MlflowException, OSError):      # it died before uploading an epoch
            continue
        yield number, downloaded, f"its MLflow run {run_id}"


def trainer_for(trial: Trial, config: TrainConfig, data: DanceData, folder: Path, prefix: str,
                callbacks: list[Callback], echo: Callable[[str], None]) -> tuple[Trainer, Resumed | None]:
    """A trainer for one seed of the trial: restored from the newest usable checkpoint of an
    earlier attempt when the trial is a retry, else fresh."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".resume-", dir=folder) as scratch:
        for number, path, where in earlier_checkpoints(trial, folder, prefix, Path(scratch)):
            try:
                state = load_checkpoint(path)
                # Read as a config: a field added since the checkpoint was written takes its default, which
                # keeps what the older code did.
                saved = config_from_checkpoint(state, path).to_dict()
                changed = _changed_training_keys(saved, config.to_dict())
                if changed:
                    raise CheckpointError(f"{where}: its config differs in {', '.join(changed)}")
                trainer = Trainer(config, data, folder, callbacks)
                trainer.load_state_dict(state)
            except (CheckpointError, KeyError) as err:
                echo(f"trial {trial.number}: not resuming: {err}")
                continue
            echo(f"trial {trial.number}: resuming trial {number} after epoch {trainer.epoch} from {where}")
            return trainer, Resumed(number, trainer.epoch)
    return Trainer(config, data, folder, callbacks), None


def _changed_training_keys(saved: dict, current: dict) -> list[str]:
    """Config keys that change what training computes."""
    return sorted(k for k in saved.keys() | current.keys() if k not in NOT_COMPUTED and saved.get(k) != current.get(k))
