"""`harness`: train, generate and sweep conditional-VAE video predictors."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, get_args, get_origin

import click
import yaml

from models.config import CHOICES, ConfigError, TrainConfig
from models.synth import APPEARANCES, generate_dataset

from .cli_common import echo, friendly_errors

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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="harness")
@click.option("--debug", is_flag=True, help="Print the traceback of a bug (also: HARNESS_DEBUG=1).")
def main(debug: bool) -> None:
    """Train, generate and sweep conditional-VAE video predictors.

    \b
    harness data synth --out DIR        write the built-in synthetic dance data set
    harness train --out RUN_DIR         train the CVAE (synthetic data unless --data)
    harness generate --ckpt FILE ...    roll out test pose sequences: GIF, PSNR, submission CSV
    harness sweep --study NAME          an Optuna study, each trial a training run logged to MLflow
    harness studies | report | best     what the studies found; export the best checkpoint
    harness ui                          the MLflow UI over the runs directory
    """


# -- data -------------------------------------------------------------------
@main.group()
def data() -> None:
    """Data sets in the lab layout."""


@data.command("synth")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write train/, val/ and test/ into.")
@click.option("--train-videos", default=24, show_default=True, help="Training videos (concatenated in train/).")
@click.option("--val-videos", default=2, show_default=True, help="Validation videos (concatenated in val/).")
@click.option("--test-videos", default=2, show_default=True, help="Test sequences (test/test_img/<i>/...).")
@click.option("--frames", default=160, show_default=True, help="Frames per training video.")
@click.option("--val-frames", default=630, show_default=True, help="Frames per validation and test video.")
@click.option("--height", default=32, show_default=True, help="Frame height.")
@click.option("--width", default=64, show_default=True, help="Frame width.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--appearance", type=click.Choice(list(APPEARANCES)), default="default", show_default=True,
              help="Colour ranges of the videos' looks; 'shifted' (darker, more saturated rooms, other clothes "
                   "and light) and 'bright' (white rooms, dark shirts over pale trousers) give the same motion in "
                   "colours the default set never shows.")
@friendly_errors
def data_synth(out: Path, train_videos: int, val_videos: int, test_videos: int, frames: int,
               val_frames: int, height: int, width: int, seed: int, appearance: str) -> None:
    """Write the synthetic dance data set (images, pose labels, figure masks) in the lab layout."""
    summary = generate_dataset(out, train_videos=train_videos, val_videos=val_videos, test_videos=test_videos,
                               frames=frames, val_frames=val_frames, height=height, width=width, seed=seed,
                               appearance=appearance, progress=echo)
    echo(f"wrote {out}: " + ", ".join(f"{k}={v}" for k, v in summary.items() if isinstance(v, (int, float))))


# -- train ------------------------------------------------------------------
def resolve_config(config_file: Path | None, data_dir: str | None, overrides: dict) -> TrainConfig:
    values = load_config_file(config_file) if config_file else {}
    if data_dir is not None:
        values["data"] = data_dir
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)


def resumed_config(run_dir: Path, data_dir: str | None, overrides: dict) -> tuple[Path, TrainConfig]:
    """The checkpoint to resume and its config; typed options must agree with it."""
    from models.checkpoint import config_from_checkpoint, load_checkpoint
    from models.trainer import LAST_CHECKPOINT

    ckpt = run_dir / "checkpoints" / LAST_CHECKPOINT
    if not ckpt.is_file():
        raise ConfigError(f"--resume: {ckpt} does not exist; nothing to resume in --out {run_dir}")
    config = config_from_checkpoint(load_checkpoint(ckpt), ckpt)
    given = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        given["data"] = data_dir
    for key, value in given.items():
        if getattr(config, key) != value:
            raise ConfigError(f"--resume: --{key.replace('_', '-')} {value} differs from the run's "
                              f"{getattr(config, key)}; drop the option or start a new --out")
    return ckpt, config


@main.command()
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
    from models.data import load_dance_data
    from models.trainer import LAST_CHECKPOINT, Trainer

    from .datasets import frames_cache_dir, resolve_data_root
    from .progress import ProgressReporter
    from .run_outputs import RunOutputs

    if resume:
        if config_file is not None:
            raise ConfigError("--resume takes its config from the checkpoint; drop --config")
        ckpt, config = resumed_config(run_dir, data_dir, overrides)
    else:
        config = resolve_config(config_file, data_dir, overrides)
        existing = run_dir / "checkpoints" / LAST_CHECKPOINT
        if existing.exists():
            raise ConfigError(f"--out {run_dir} already holds a run ({existing}); "
                              "pass --resume to continue it, or choose another --out")
    root = resolve_data_root(config.data, config.height, config.width, progress=echo)
    started = time.perf_counter()
    dataset = load_dance_data(root, height=config.height, width=config.width, train_vi_len=config.train_vi_len,
                              val_vi_len=config.val_vi_len, cache_dir=frames_cache_dir())
    echo(f"loaded {root} in {time.perf_counter() - started:.1f}s")
    callbacks = [ProgressReporter(), RunOutputs(run_dir, root)]
    if resume:
        trainer = Trainer.resume(ckpt, dataset, run_dir, callbacks)
        echo(f"resuming {run_dir} at epoch {trainer.epoch + 1}")
    else:
        trainer = Trainer(config, dataset, run_dir, callbacks)
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        echo(f"\ninterrupted: checkpoints up to epoch {trainer.epoch} are kept; "
             f"continue with: harness train --out {run_dir} --resume")
        sys.exit(130)
    echo(f"outputs in {run_dir}")
    if result.status == "diverged":
        echo(f"error: {result.message}")
        sys.exit(3)


# -- generate ---------------------------------------------------------------
@main.command()
@click.option("--ckpt", type=click.Path(path_type=Path), required=True,
              help="Checkpoint (a run's checkpoints/best.pt or last.pt, or an exported one).")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Data root holding test/test_img/<i>/frame0.png and test/test_label/<i>/frame*.png. "
                   "Unset: the built-in synthetic set.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the GIFs, submission.csv and the PSNR CSV/PNG.")
@click.option("--samples", type=int, default=None, help="Latent samples K per step [default: the run's val_samples].")
@click.option("--length", type=int, default=None, help="Frames per rollout [default: the whole pose sequence].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent noise.")
@click.option("--device", default="auto", show_default=True, help="Torch device: auto, cpu, cuda, ...")
@friendly_errors
def generate(ckpt: Path, data_dir: str | None, out_dir: Path, samples: int | None, length: int | None,
             seed: int, device: str) -> None:
    """Roll out each test pose sequence from its first frame: rollout GIFs, per-frame PSNR
    (CSV and PNG, where ground truth exists) and the submission CSV."""
    import pandas as pd

    from models.checkpoint import load_model
    from models.data import load_test_sequences
    from models.generate import (RepeatFirstFrame, generate_sequences, rollout_length, untrained_model,
                                 write_submission_csv)
    from models.metrics import REGIONS
    from models.trainer import resolve_device

    from .datasets import frames_cache_dir, resolve_data_root
    from .media import to_uint8_frames, write_rollout_gif
    from .plots import plot_psnr_per_frame

    if length is not None and length < 2:
        raise ConfigError(f"--length must be >= 2, got {length}")
    torch_device = resolve_device(device)
    model, config = load_model(ckpt, torch_device)
    root = resolve_data_root(data_dir, config.height, config.width, progress=echo)
    sequences = load_test_sequences(root, height=config.height, width=config.width, cache_dir=frames_cache_dir())
    k = samples or config.val_samples
    echo(f"rolling out {len(sequences)} sequence(s) from {root} with K={k} on {torch_device}")
    rollout = {"samples": k, "seed": seed, "length": length, "device": torch_device,
               "zero_z": config.rollout_z == "zero", "quantize": config.rollout_quantize}
    frames = sum(rollout_length(seq, length) for seq in sequences)

    def timed_rollout(name: str, source: Any) -> list:
        # A 630-frame rollout takes about a minute on a CPU: say what is running and how long it took.
        echo(f"{name}: rolling out {frames} frames ...")
        started = time.perf_counter()
        results = generate_sequences(source, sequences, **rollout)
        echo(f"{name}: done in {time.perf_counter() - started:.1f}s")
        return results

    generated = timed_rollout("model", model)

    out_dir.mkdir(parents=True, exist_ok=True)
    rows, curves, figure_curves = [], {}, {}
    for seq, gen in zip(sequences, generated):
        count = len(gen.frames)
        truth = to_uint8_frames(seq.truth[:count]) if seq.truth is not None else None
        write_rollout_gif(out_dir / f"rollout_{gen.index}.gif", prediction=to_uint8_frames(gen.frames),
                          truth=truth, pose=to_uint8_frames(seq.labels[:count]))
    write_submission_csv(generated, out_dir / "submission.csv")
    if any(gen.psnr is not None for gen in generated):
        # Where ground truth exists, the two baselines roll out the same sequences beside the model.
        runs = {"model": generated,
                "repeat first frame": timed_rollout("baseline repeat first frame", RepeatFirstFrame()),
                "untrained model": timed_rollout("baseline untrained model", untrained_model(config, torch_device))}
        for name, results in runs.items():
            for gen in results:
                if gen.psnr is None:
                    continue
                label = f"sequence {gen.index}" + ("" if name == "model" else f": {name}")
                curves[label] = gen.psnr.numpy()
                if "figure" in gen.region_psnr:
                    figure_curves[label] = gen.region_psnr["figure"].numpy()
                # Region columns only where the test split has masks (NaN in a frame without the figure).
                rows += [{"curve": name, "sequence": gen.index, "frame": i, "psnr": float(v),
                          **{f"psnr_{region}": float(values[i]) for region, values in gen.region_psnr.items()}}
                         for i, v in enumerate(gen.psnr)]
        table = pd.DataFrame(rows)
        table.to_csv(out_dir / "psnr_per_frame.csv", index=False)
        plot_psnr_per_frame(curves, out_dir / "psnr_per_frame.png", title=f"Rollout PSNR per frame ({ckpt.name})",
                            figure_psnr=figure_curves or None)
        predicted = table[table.frame > 0]
        for name, part in predicted.groupby("curve", sort=False):
            regions = ", ".join(f"{region} {part[f'psnr_{region}'].mean():.2f} dB"
                                for region in REGIONS if f"psnr_{region}" in part)
            echo(f"mean PSNR over predicted frames, {name}: {part.psnr.mean():.2f} dB"
                 + (f" ({regions})" if regions else ""))
    echo(f"wrote {len(generated)} GIF(s), submission.csv ({sum(len(g.frames) for g in generated)} rows) to {out_dir}")


from .sweep_commands import best, report, studies, sweep, ui  # noqa: E402  (they need `main` above)

for _command in (sweep, best, studies, report, ui):
    main.add_command(_command)

if __name__ == "__main__":
    main()
