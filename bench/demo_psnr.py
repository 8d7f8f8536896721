"""Final models of CPU-demo runs (one per seed) on the 630-frame validation rollout, beside both baselines:
on the built-in set and on one that no tuning looked at (another seed, shifted appearance), over the whole
frame, the figure and the background; the mean over the runs with a 95% interval.

    for seed in 0 1 2; do harness train --config configs/cpu-demo.yaml --out runs/demo-$seed --seed $seed; done
    python bench/demo_psnr.py runs/demo-0 runs/demo-1 runs/demo-2

Each run's final checkpoint (checkpoints/last.pt, not the best epoch) is rolled out here, the same way
the trainer's validation does; the per-frame curves of the unseen set go to RUN_DIR/unseen/.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from common import record
from harness.datasets import frames_cache_dir, synthetic_root
from harness.intervals import mean_interval
from harness.plots import plot_psnr_per_frame
from models.checkpoint import load_model
from models.data import TestSequence, load_dance_data
from models.generate import RepeatFirstFrame, generate_sequences, untrained_model
from models.trainer import LAST_CHECKPOINT

UNSEEN = {"seed": 7, "appearance": "shifted"}
CURVES = ("model", "repeat first frame", "untrained model")


def validation_sequences(root: Path, config) -> list[TestSequence]:
    data = load_dance_data(root, height=config.height, width=config.width, train_vi_len=config.train_vi_len,
                           val_vi_len=config.val_vi_len, cache_dir=frames_cache_dir())
    images, labels, masks = data.val_runs(config.val_vi_len, config.val_max_sequences)
    return [TestSequence(i, images[i, 0], labels[i], images[i], None if masks is None else masks[i])
            for i in range(len(images))]


def score(run_dir: Path, root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per curve (model, baselines) and region (whole, figure, background): PSNR per frame, averaged over
    the validation sequences."""
    model, config = load_model(run_dir / "checkpoints" / LAST_CHECKPOINT)
    sequences = validation_sequences(root, config)
    rollout = {"samples": config.val_samples, "seed": 0, "zero_z": config.rollout_z == "zero",
               "quantize": config.rollout_quantize}
    models = {"model": model, "repeat first frame": RepeatFirstFrame(), "untrained model": untrained_model(config)}
    scores = {}
    for name, candidate in models.items():
        generated = generate_sequences(candidate, sequences, **rollout)
        regions = {"whole": np.mean([g.psnr.numpy() for g in generated], axis=0)}
        for region in generated[0].region_psnr:
            regions[region] = np.nanmean([g.region_psnr[region].numpy() for g in generated], axis=0)
        scores[name] = regions
    return scores


def wall_minutes(run_dir: Path) -> float:
    """Training and validation time of a run from its metrics.json (epochs, baselines and final rollout aside)."""
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    return sum(h["seconds"] + h["val_seconds"] for h in history) / 60


def main() -> None:
    runs = [Path(arg) for arg in sys.argv[1:]] or [Path("runs/demo")]
    torch.manual_seed(0)
    _, config = load_model(runs[0] / "checkpoints" / LAST_CHECKPOINT)
    sets = {"built-in validation set": synthetic_root(config.height, config.width),
            f"unseen set (seed {UNSEEN['seed']}, {UNSEEN['appearance']} appearance)":
                synthetic_root(config.height, config.width, **UNSEEN)}
    lines = [f"- runs: {', '.join(map(str, runs))} (final checkpoints); training + validation "
             f"{', '.join(f'{wall_minutes(r):.1f}' for r in runs)} min each"]
    for label, root in sets.items():
        per_run = [score(run, root) for run in runs]
        lines.append(f"- {label}, {config.val_vi_len}-frame rollout, mean PSNR over frames 1..T-1, "
                     f"mean ± 95% interval over {len(runs)} run(s):")
        lines.append("")
        lines.append("  | | whole frame | figure | background |")
        lines.append("  | --- | --- | --- | --- |")
        for curve in CURVES:
            cells = [mean_interval([float(np.nanmean(s[curve][region][1:])) for s in per_run]).describe()
                     for region in ("whole", "figure", "background") if region in per_run[0][curve]]
            lines.append(f"  | {curve} | " + " | ".join(cells) + " |")
        for region in ("whole", "figure", "background"):
            if region not in per_run[0]["model"]:
                continue
            model = [float(np.nanmean(s["model"][region][1:])) for s in per_run]
            repeat = [float(np.nanmean(s["repeat first frame"][region][1:])) for s in per_run]
            margins = mean_interval([m - r for m, r in zip(model, repeat)])
            lines.append(f"  - model minus repeat-first-frame, {region}: {margins.describe()} "
                         f"(runs: {', '.join(f'{m - r:+.2f}' for m, r in zip(model, repeat))})")
        lines.append("")
        if "unseen" in label:
            for run, scores in zip(runs, per_run):
                (run / "unseen").mkdir(exist_ok=True)
                plot_psnr_per_frame({name: scores[name]["whole"] for name in CURVES}, run / "unseen" / "psnr_per_frame.png",
                                    title=f"{run.name} on the {label}",
                                    figure_psnr={name: scores[name]["figure"] for name in CURVES}
                                    if "figure" in scores["model"] else None)
    record("CPU demo: final models beside the baselines, built-in and unseen data", lines)


if __name__ == "__main__":
    main()
