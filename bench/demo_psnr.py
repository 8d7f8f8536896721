"""Validation PSNR of a finished run beside its two baselines, from RUN_DIR/metrics.json.

    harness train --config configs/cpu-demo.yaml --out runs/demo
    python bench/demo_psnr.py runs/demo
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from common import record


def main() -> None:
    run_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")
    summary = json.loads((run_dir / "metrics.json").read_text())
    history = summary["history"]
    train_s = sum(h["seconds"] + h["val_seconds"] for h in history)
    lines = [
        f"- run {run_dir}: {summary['status']}, {summary['epochs_run']} epochs, {train_s / 60:.1f} min of "
        f"training and validation",
        f"- validation PSNR, mean over frames 1..T-1 of the rollout: last epoch {summary['val_psnr']:.2f} dB, "
        f"best epoch {summary['best_val_psnr']:.2f} dB",
        *[f"- baseline {name}: {value:.2f} dB" for name, value in summary["baselines"].items()],
        "- per epoch: " + ", ".join(f"{h['val_psnr']:.2f}" for h in history),
    ]
    record("Demo run: validation PSNR beside the baselines", lines)


if __name__ == "__main__":
    main()
