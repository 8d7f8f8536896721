"""Final models of CPU-demo runs (one per seed) on the 630-frame validation rollout, beside both baselines:
on the built-in set and on sets of other colours (another generator seed and appearance ranges), over the
whole frame, the figure and the background; the mean over the runs with a 95% interval.

    for seed in 0 1 2; do harness train --config configs/cpu-demo.yaml --out runs/demo-$seed --seed $seed; done
    python bench/demo_psnr.py runs/demo-0 runs/demo-1 runs/demo-2 [--holdout] [--title TEXT]

The unseen set (seed 7, `shifted`) was looked at while the recipe was chosen; the holdout set (seed 11,
`bright`) is scored only with --holdout, for a recipe already chosen. Each run's final checkpoint
(checkpoints/last.pt, not the best epoch; --checkpoint picks another file there) is rolled out here, the
same way the trainer's validation does; the per-frame curves of the other sets go to RUN_DIR/<set>/.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from common import record
from harness.worker.datasets import frames_cache_dir, synthetic_root
from harness.intervals import mean_interval
from harness.outputs.plots import plot_psnr_per_frame
from models.checkpoint import load_checkpoint, load_model
from models.data import TestSequence, load_dance_data
from models.generate import RepeatFirstFrame, generate_sequences, untrained_model
from models.records import LAST_CHECKPOINT

OTHER_SETS = {"unseen": {"seed": 7, "appearance": "shifted"}, "holdout": {"seed": 11, "appearance": "bright"}}
CURVES = ("model", "repeat first frame", "untrained model")


def validation_sequences(root: Path, config) -> list[TestSequence]:
    data = load_dance_data(root, height=config.height, width=config.width, train_vi_len=config.train_vi_len,
                           val_vi_len=config.val_vi_len, cache_dir=frames_cache_dir())
    images, labels, masks = data.val_runs(config.val_vi_len, config.val_max_sequences)
    return [TestSequence(i, images[i, 0], labels[i], images[i], None if masks is None else masks[i])
            for i in range(len(images))]


def score(checkpoint: Path, root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per curve (model, baselines) and region (whole, figure, background): PSNR per frame, averaged over
    the validation sequences."""
    model, config = load_model(checkpoint)
    sequences = validation_sequences(root, config)
    rollout = {"samples": config.val_samples, "seed": 0, "zero_z": config.rollout_z == "zero",
               "quantize": config.rollout_quantize}
    models = {"model": model, "repeat first frame": RepeatFirstFrame(), "untrained model": untrained_model(config)}
    scores = {}
    for name, candidate in models.items():
        generated = generate_sequences(candidate, sequences, **rollout)
        regions = {"whole": np.mean([g.psnr for g in generated], axis=0)}
        for region in generated[0].region_psnr:
            regions[region] = np.nanmean([g.region_psnr[region] for g in generated], axis=0)
        scores[name] = regions
    return scores


def wall_minutes(checkpoint: Path) -> float:
    """Training and validation time of the epochs behind a checkpoint (baselines and final rollout aside)."""
    history = load_checkpoint(checkpoint)["history"]
    return sum(h["seconds"] + h["val_seconds"] for h in history) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, default=[Path("runs/demo")])
    parser.add_argument("--holdout", action="store_true", help="also score the holdout set (seed 11, bright)")
    parser.add_argument("--checkpoint", default=LAST_CHECKPOINT, help="file in RUN_DIR/checkpoints to score")
    parser.add_argument("--title", default="CPU demo: final models beside the baselines, built-in and other-colour data",
                        help="the heading of the BENCHMARKS.md block: what the runs are")
    parser.add_argument("--print-only", action="store_true", help="print the figures, append nothing to BENCHMARKS.md")
    args = parser.parse_args()
    runs = args.runs
    torch.manual_seed(0)
    _, config = load_model(runs[0] / "checkpoints" / args.checkpoint)
    sets = {"built-in validation set": ("", synthetic_root(config.height, config.width))}
    for name, look in OTHER_SETS.items():
        if name != "holdout" or args.holdout:
            sets[f"{name} set (seed {look['seed']}, {look['appearance']} appearance)"] = (
                name, synthetic_root(config.height, config.width, **look))
    minutes = [wall_minutes(run / "checkpoints" / args.checkpoint) for run in runs]
    lines = [f"- runs: {', '.join(map(str, runs))} ({args.checkpoint}); training + validation "
             f"{', '.join(f'{m:.1f}' for m in minutes)} min each"]
    for label, (folder, root) in sets.items():
        per_run = [score(run / "checkpoints" / args.checkpoint, root) for run in runs]
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
        if folder:
            for run, scores in zip(runs, per_run):
                (run / folder).mkdir(exist_ok=True)
                plot_psnr_per_frame({name: scores[name]["whole"] for name in CURVES}, run / folder / "psnr_per_frame.png",
                                    title=f"{run.name} on the {label}",
                                    figure_psnr={name: scores[name]["figure"] for name in CURVES}
                                    if "figure" in scores["model"] else None)
    record(args.title, lines, append=not args.print_only)


if __name__ == "__main__":
    main()
