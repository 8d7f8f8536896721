"""`harness generate`: roll out the test pose sequences of a checkpoint beside the baselines."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from models.config import ConfigError

from .common import echo, friendly_errors

@click.command()
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

    from harness.worker.datasets import frames_cache_dir, resolve_data_root
    from harness.outputs.gif import to_uint8_frames, write_rollout_gif
    from harness.outputs.plots import plot_psnr_per_frame

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



