"""Training throughput (frames/s, forward + backward + Adam step) of the CVAE at 32x64,
with and without teacher forcing, and rollout speed (frames/s).

    python bench/train_throughput.py [--dims 128,32,12,192] [--batch 2] [--steps 3]
"""
from __future__ import annotations

import argparse
import time

import torch

from common import record

from models.cvae import VideoCVAE


def time_call(fn, repeats: int) -> float:
    fn()  # warm-up: first calls pay for allocations and kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dims", default="128,32,12,192", help="F,L,N,D")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=16, help="train_vi_len")
    parser.add_argument("--steps", type=int, default=3, help="timed repeats (best is kept)")
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    dims = tuple(int(v) for v in args.dims.split(","))
    torch.manual_seed(0)
    model = VideoCVAE(*dims)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    shape = (args.batch, args.length, 3, args.height, args.width)
    frames, poses = torch.rand(shape), torch.rand(shape)
    predicted = args.batch * (args.length - 1)

    def train_step(teacher_forcing: bool, frames_per_pass: int | None = None):
        def step() -> None:
            pred, kl = model.reconstruct(frames, poses, teacher_forcing, frames_per_pass=frames_per_pass)
            loss = (pred - frames[:, 1:]).pow(2).mean(dim=(0, 2, 3, 4)).sum() + kl.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    lines = [f"- model dims F,L,N,D = {dims}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; "
             f"batch {args.batch} x {args.length} frames at {args.height}x{args.width}"]
    for forced, per_pass in ((True, None), (True, 16), (True, 8), (True, 4), (False, None)):
        seconds = time_call(train_step(forced, per_pass), args.steps)
        mode = f"on, {per_pass or 'all'} frames per pass" if forced else "off (sequential)"
        lines.append(f"- training, teacher forcing {mode}: {predicted / seconds:.2f} frames/s "
                     f"({seconds:.2f} s per step of {predicted} predicted frames)")
    model.eval()
    for samples in (1, 10):
        seconds = time_call(lambda: model.rollout(frames[:1, 0], poses[:1].repeat(1, 2, 1, 1, 1), samples),
                            max(1, args.steps - 1))
        lines.append(f"- rollout, K={samples}: {(2 * args.length - 1) / seconds:.2f} frames/s "
                     f"({2 * args.length}-frame sequence)")
    record("Training and rollout throughput", lines)


if __name__ == "__main__":
    main()
