"""`harness generate`: roll out the test pose sequences of a checkpoint beside the baselines."""
from __future__ import annotations

from pathlib import Path

import click

from .checks import check_device, file_to_read, folder_to_write
from .common import echo, friendly_errors


@click.command()
@click.option("--ckpt", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Checkpoint (a run's checkpoints/best.pt or last.pt, or an exported one).")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Data root holding test/test_img/<i>/frame0.png and test/test_label/<i>/frame*.png. "
                   "Unset: the built-in synthetic set.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the GIFs, submission.csv and the PSNR CSV/PNG.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Latent samples K per step [default: the run's val_samples].")
@click.option("--length", type=click.IntRange(min=2), default=None,
              help="Frames per rollout [default: the whole pose sequence].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent noise.")
@click.option("--device", default="auto", show_default=True, help="Torch device: auto, cpu, cuda, ...")
@friendly_errors
def generate(ckpt: Path, data_dir: str | None, out_dir: Path, samples: int | None, length: int | None,
             seed: int, device: str) -> None:
    """Roll out each test pose sequence from its first frame: rollout GIFs, per-frame PSNR
    (CSV and PNG, where ground truth exists) and the submission CSV."""
    from harness.outputs.generation import write_generation
    from harness.worker.datasets import frames_cache_dir, resolve_data_root
    from models.checkpoint import load_model
    from models.data import load_test_sequences
    from models.execution import resolve_device
    from models.generate import rollouts_with_baselines

    file_to_read(ckpt, "--ckpt")
    folder_to_write(out_dir, "--out")      # before the rollout, which takes minutes
    check_device(device)
    torch_device = resolve_device(device)
    model, config = load_model(ckpt, torch_device)
    root = resolve_data_root(data_dir, config.height, config.width, progress=echo)
    sequences = load_test_sequences(root, height=config.height, width=config.width, cache_dir=frames_cache_dir())
    k = samples if samples is not None else config.val_samples
    echo(f"rolling out {len(sequences)} sequence(s) from {root} with K={k} on {torch_device}")
    runs = rollouts_with_baselines(model, config, sequences, samples=k, seed=seed, length=length,
                                   device=torch_device, progress=echo)
    out_dir.mkdir(parents=True, exist_ok=True)
    for line in write_generation(runs, out_dir, title=f"Rollout PSNR per frame ({ckpt.name})"):
        echo(line)
