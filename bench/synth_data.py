"""Time to generate the default synthetic data set, to decode it into memory (cold and cached),
and what fetching a training batch costs beside a training step of the default model."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from common import record
from model_speed import HEIGHT, WIDTH, TRAIN_LEN, Workload, best_time, train_step

from models.cvae import VideoCVAE
from models.data import DanceData, load_dance_data, to_unit
from models.execution import Execution
from models.synth import generate_dataset

BATCH = 2


def fetch_share(data: DanceData) -> str:
    """The trainer's per-step fetch (index the uint8 runs, convert to float) against one training step."""
    frames, poses = data.train_runs(TRAIN_LEN)
    order = torch.randperm(len(frames))
    batches = [order[i:i + BATCH] for i in range(0, len(order) - BATCH + 1, BATCH)]
    start = time.perf_counter()
    for idx in batches:
        to_unit(frames[idx]), to_unit(poses[idx])
    fetch_s = (time.perf_counter() - start) / len(batches)
    device = torch.device("cpu")
    execution = Execution.default_for(device, 192, HEIGHT, WIDTH)
    model = execution.prepare(VideoCVAE())
    work = Workload.make(BATCH, TRAIN_LEN, device)
    step_s = best_time(lambda: train_step(model, execution, work), 1, device)
    return (f"- fetching a batch of {BATCH} x {TRAIN_LEN} frames and poses from memory: {1e3 * fetch_s:.2f} ms, "
            f"{100 * fetch_s / step_s:.3f}% of a {step_s:.1f} s training step of the default model")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        start = time.perf_counter()
        summary = generate_dataset(root)
        generate_s = time.perf_counter() - start
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        data = load_dance_data(root, cache_dir=cache)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        load_dance_data(root, cache_dir=cache)
        cached_s = time.perf_counter() - start
    frames = summary["frames"]
    record("Synthetic data set (defaults: 24x160 train, 2x630 val, 2x630 test frames at 32x64)", [
        f"- generate (render + write {summary['files']} files): {generate_s:.1f} s "
        f"(render {summary['render_seconds']:.1f} s of CPU time over threads)",
        f"- decode train+val ({len(data.train_img) + len(data.val_img)} frame pairs) into memory: {cold_s:.2f} s; "
        f"again from the .npy cache: {cached_s:.2f} s",
        f"- frames per split: {frames}",
        fetch_share(data),
    ])


if __name__ == "__main__":
    main()
