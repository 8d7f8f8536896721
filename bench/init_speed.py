"""Training PSNR after N steps with PyTorch's default initialisation vs the model's
zero-initialised residual branches (models.cvae.init_weights), same data, seed and steps.

    python bench/init_speed.py [--steps 200] [--dims 32,8,4,32]
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from common import record

from models.cvae import VideoCVAE
from models.data import load_dance_data
from models.synth import generate_dataset


def default_init(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.reset_parameters()


def train(model: VideoCVAE, runs: tuple[torch.Tensor, torch.Tensor], steps: int, every: int) -> list[str]:
    frames_u8, poses_u8 = runs
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    sampler = torch.Generator().manual_seed(0)
    curve, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(len(frames_u8), (4,), generator=sampler)
        frames, poses = frames_u8[idx].float() / 255, poses_u8[idx].float() / 255
        pred, kl = model.reconstruct(frames, poses, True, sampler)
        mse = (pred - frames[:, 1:]).pow(2).mean()
        loss = mse * (frames.shape[1] - 1) + 1e-4 * kl.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % every == 0:
            curve.append(f"{10 * math.log10(1 / mse.item()):.1f}")
    return curve + [f"({time.perf_counter() - start:.0f} s)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--dims", default="32,8,4,32")
    args = parser.parse_args()
    dims = tuple(int(v) for v in args.dims.split(","))
    every = max(1, args.steps // 4)
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(Path(tmp) / "d", train_videos=4, val_videos=1, test_videos=1, frames=64, val_frames=16)
        runs = load_dance_data(Path(tmp) / "d", train_vi_len=8, val_vi_len=16).train_runs(8)
    lines = [f"- dims {dims}, batch 4 x 8 frames at 32x64, Adam 2e-3, teacher forcing; "
             f"training PSNR (dB) every {every} steps:"]
    for name, init in (("PyTorch default init", default_init), ("zero-init residual branches", None)):
        torch.manual_seed(0)
        model = VideoCVAE(*dims)
        if init is not None:
            init(model)
        lines.append(f"  - {name}: {' '.join(train(model, runs, args.steps, every))}")
    record("Initialisation: training PSNR after N steps", lines)


if __name__ == "__main__":
    main()
