"""`harness train`: one training run in a folder, resumable; one option per training-config field."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Callable, get_args, get_origin

import click
import yaml

from models.config import CHOICES, ConfigError, TrainConfig

from harness.outputs.names import CHECKPOINTS_DIR, LAST_CHECKPOINT

from .checks import check_device, folder_to_write
from .common import echo, friendly_errors

# Options of `harness train` that are not training hyperparameters.
_NOT_OPTIONS = {"data", "loss_convention"}


def config_options(command: Callable) -> Callable:
    """One CLI option per TrainConfig field (`f_dim` -> `--f-dim`), help taken from the field.

    Defaults stay None here so that only options the user typed override a
    --config file or are compared against a resumed run's config.
    """
    for name, f in reversed(TrainConfig.model_fields.items()):
        if name in _NOT_OPTIONS:
            continue
        flag = "--" + name.replace("_", "-")
        help_text = f"{f.description} [default: {f.default}]"
        if name in CHOICES:
            option = click.option(flag, name, type=click.Choice(CHOICES[name]), default=None, help=help_text)
        elif _value_type(f.annotation) is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
        else:
            option = click.option(flag, name, type=_value_type(f.annotation), default=None, help=help_text)
        command = option(command)
    return command


def _value_type(annotation: Any) -> type:
    """int of `int`, `int | None` and `Annotated[int, ...] | None`."""
    (value_type,) = [t for t in get_args(annotation) or (annotation,) if t is not type(None)]
    return get_args(value_type)[0] if get_origin(value_type) is Annotated else value_type


def load_config_file(path: Path) -> dict:
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read config ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of option names to values")
    unknown = sorted(set(values) - set(TrainConfig.model_fields))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
    return values


def resolve_config(config_file: Path | None, data_dir: str | None, overrides: dict) -> TrainConfig:
    values = load_config_file(config_file) if config_file else {}
    if data_dir is not None:
        values["data"] = data_dir
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)


# What a resumed run may change: where it trains and where its data is, not what it computes.
MOVABLE = ("device", "data")


def resumed_config(run_dir: Path, data_dir: str | None, overrides: dict) -> tuple[Path, TrainConfig]:
    """The checkpoint to resume and its config; typed options must agree with it, except where the run
    goes on (--device: a run started on a GPU continues on a CPU, and back) and where its data lies
    on this machine (--data)."""
    from models.checkpoint import config_from_checkpoint, load_checkpoint

    ckpt = run_dir / CHECKPOINTS_DIR / LAST_CHECKPOINT
    if not ckpt.is_file():
        raise ConfigError(f"--resume: {ckpt} does not exist; nothing to resume in --out {run_dir}")
    config = config_from_checkpoint(load_checkpoint(ckpt), ckpt)
    given = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        given["data"] = data_dir
    movable = {key: given.pop(key) for key in MOVABLE if key in given}
    for key, value in given.items():
        if getattr(config, key) != value:
            raise ConfigError(f"--resume: --{key.replace('_', '-')} {value} differs from the run's "
                              f"{getattr(config, key)}; drop the option or start a new --out")
    return ckpt, config.replace(**movable)


@click.command()
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Data root in the lab layout (train/, val/). Unset: the built-in synthetic set, "
                   "generated once into $HARNESS_CACHE_DIR (default ~/.cache/harness).")
@click.option("--out", "run_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder: checkpoints/, metrics.csv/json, config.yaml, PNG plots, rollout.gif.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="YAML file of option values; options typed on the command line win.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@config_options
@friendly_errors
def train(data_dir: str | None, run_dir: Path, config_file: Path | None, resume: bool, **overrides: Any) -> None:
    """Train the conditional VAE; a checkpoint every epoch, resumable with --resume."""
    from harness.worker.single_run import train_in_folder

    folder_to_write(run_dir, "--out")
    if resume:
        if config_file is not None:
            raise ConfigError("--resume takes its config from the checkpoint; drop --config")
        checkpoint, config = resumed_config(run_dir, data_dir, overrides)
    else:
        checkpoint, config = None, resolve_config(config_file, data_dir, overrides)
        existing = run_dir / CHECKPOINTS_DIR / LAST_CHECKPOINT
        if existing.exists():
            raise ConfigError(f"--out {run_dir} already holds a run ({existing}); "
                              "pass --resume to continue it, or choose another --out")
    check_device(config.device)     # typed, from --config or the resumed run's: told before training starts
    try:
        summary = train_in_folder(config, run_dir, echo, checkpoint)
    except KeyboardInterrupt:
        sys.exit(130)
    echo(f"outputs in {run_dir}")
    if summary.status == "diverged":
        echo(f"error: {summary.message}")
        sys.exit(3)
