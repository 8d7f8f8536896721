"""Model speed: FLOPs per frame, the machine's attainable FLOP/s, and training and rollout
throughput for each way of running the model, all measured side by side in one run.

    python bench/model_speed.py [--device auto] [--dims 128,32,12,192] [--batches 1,2,4,8]
                                [--rollout 630] [--repeats 2]

"plain" is eager fp32 with the whole batch in one pass, the straightforward
PyTorch loop; "default" is what the trainer uses on this device
(models.execution.Execution.default_for). Every variant first runs one
training step and a short rollout on the same weights, inputs and noise as
plain, and the largest differences are printed beside its speed.
"""
from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import record

from models.cvae import VideoCVAE
from models.execution import Execution
from models.execution import resolve_device

HEIGHT, WIDTH, TRAIN_LEN = 32, 64, 16
SLOW_CALL_S = 30.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def best_time(fn: Callable[[], object], repeats: int, device: torch.device, warm_up: bool = True) -> float:
    """Best of `repeats` calls in seconds, after a warm-up call that pays for allocation (and compilation).
    Calls slower than SLOW_CALL_S are not repeated: their spread is small beside their length."""
    if warm_up:
        timed(fn, device)
    seconds = [timed(fn, device)]
    while len(seconds) < repeats and seconds[-1] < SLOW_CALL_S:
        seconds.append(timed(fn, device))
    return min(seconds)


def attainable_flops(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of the best of a few large matmuls and 1x1 convolutions: the practical peak the model's
    convolutions compete with (a theoretical peak needs the clock, which virtual machines do not report).
    Both count: on some CPUs the convolution library (oneDNN) reaches wider vector units than the BLAS."""
    best = 0.0
    for n in ((1024, 2048) if device.type == "cpu" else (4096, 8192)):
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        best = max(best, 2 * n ** 3 / best_time(lambda: a @ b, 5, device))
        # The same product as a 1x1 convolution over n channels at 32x32.
        x = torch.randn(n // 1024, n, 32, 32, device=device, dtype=dtype)
        w = torch.randn(n, n, 1, 1, device=device, dtype=dtype)
        with torch.no_grad():
            seconds = best_time(lambda: torch.nn.functional.conv2d(x, w), 5, device)
        best = max(best, 2 * x.shape[0] * n * n * 32 * 32 / seconds)
    return best


@dataclass
class Workload:
    """Fixed inputs and noise, so every variant computes the same thing."""
    frames: torch.Tensor
    poses: torch.Tensor
    device: torch.device

    @classmethod
    def make(cls, batch: int, length: int, device: torch.device, seed: int = 0) -> "Workload":
        g = torch.Generator().manual_seed(seed)
        shape = (batch, length, 3, HEIGHT, WIDTH)
        return cls(torch.rand(shape, generator=g).to(device), torch.rand(shape, generator=g).to(device), device)

    @property
    def predicted(self) -> int:
        return self.frames.shape[0] * (self.frames.shape[1] - 1)


def train_step(model: VideoCVAE, execution: Execution, work: Workload) -> float:
    """Forward and backward of one teacher-forced batch, the trainer's loss; returns the loss."""
    noise = torch.Generator(device=work.device).manual_seed(1)
    with execution.autocast(work.device):
        pred, kl = model.reconstruct(work.frames, work.poses, True, noise, execution.frames_per_pass)
    loss = (pred.float() - work.frames[:, 1:]).pow(2).mean(dim=(0, 2, 3, 4)).sum() + 1e-4 * kl.float().sum()
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss.item()


def rollout(model: VideoCVAE, execution: Execution, work: Workload, length: int, samples: int) -> torch.Tensor:
    noise = torch.Generator(device=work.device).manual_seed(2)
    with torch.no_grad(), execution.autocast(work.device):
        return model.rollout(work.frames[:1, 0], work.poses[:1, :length], samples, noise).float()


def flops_per_frame(model: VideoCVAE, work: Workload) -> tuple[float, float]:
    """(training FLOPs per predicted frame, forward and backward; rollout FLOPs per frame with K = 1)."""
    plain = Execution()
    with FlopCounterMode(display=False) as counter:
        train_step(model, plain, work)
    train = counter.get_total_flops() / work.predicted
    with FlopCounterMode(display=False) as counter:
        rollout(model, plain, work, 9, 1)
    return train, counter.get_total_flops() / 8


def variants(device: torch.device, default: Execution) -> list[tuple[str, Execution, int]]:
    """(name, settings, threads) to compare, plain eager first; threads 0 keeps torch's default."""
    plain = Execution()
    if device.type == "cpu":
        passes = plain.with_(frames_per_pass=default.frames_per_pass)
        candidates = [plain, passes, passes.with_(channels_last=True), passes.with_(compiled=True),
                      passes.with_(channels_last=True, compiled=True), default.with_(bf16=True)]
    else:
        candidates = [plain, plain.with_(channels_last=True), plain.with_(bf16=True),
                      plain.with_(channels_last=True, bf16=True), plain.with_(compiled=True),
                      plain.with_(compiled=True, bf16=True), plain.with_(cuda_graphs=True, bf16=True)]
    found = [(("plain eager fp32: " if c == plain else "") + c.describe() + (" (default)" if c == default else ""),
              c, 0) for c in candidates]
    if device.type == "cpu":
        found.append(("the default on 1 thread", default, 1))
    return found


@dataclass
class Measured:
    name: str
    train_fps: float
    first_step_s: float
    rollout_fps: float
    diffs: str


def compare_variants(base: VideoCVAE, device: torch.device, default: Execution, work: Workload,
                     args: argparse.Namespace) -> list[Measured]:
    """Each variant's speed and its largest difference from plain, on the same weights, inputs and noise."""
    results: list[Measured] = []
    reference = None
    roll_work = Workload.make(1, args.short_rollout, device)
    default_threads = torch.get_num_threads()
    for name, execution, threads in variants(device, default):
        torch.set_num_threads(threads or default_threads)
        model = execution.prepare(copy.deepcopy(base))
        try:
            start = time.perf_counter()
            loss = train_step(model, execution, work)
            first = time.perf_counter() - start
            grads = torch.cat([p.grad.flatten().float() for p in model.parameters()])
            start = time.perf_counter()
            frames = rollout(model, execution, roll_work, args.short_rollout, 1)
            first_roll = time.perf_counter() - start
            # The first calls pay for compilation; slow calls (bf16 without hardware support) are not repeated.
            once = not (execution.compiled or execution.cuda_graphs)
            best = first if once and first > SLOW_CALL_S else \
                best_time(lambda: train_step(model, execution, work), args.repeats, device, warm_up=False)
            roll = first_roll if once and first_roll > SLOW_CALL_S else \
                best_time(lambda: rollout(model, execution, roll_work, args.short_rollout, 1), 1, device,
                          warm_up=False)
        except Exception as err:  # a variant this machine cannot run (e.g. no compiler) is reported, not fatal
            print(f"{name}: failed: {type(err).__name__}: {err}")
            results.append(Measured(name, float("nan"), float("nan"), float("nan"),
                                    f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}"))
            continue
        finally:
            torch.set_num_threads(default_threads)
        if reference is None:
            reference = (loss, grads, frames)
        ref_loss, ref_grads, ref_frames = reference
        diffs = (f"loss {abs(loss - ref_loss) / abs(ref_loss):.1e}, "
                 f"grads {((grads - ref_grads).norm() / ref_grads.norm()).item():.1e}, "
                 f"pixels {(frames - ref_frames).abs().max().item():.1e}")
        results.append(Measured(name, work.predicted / best, first, (args.short_rollout - 1) / roll, diffs))
        print(results[-1], flush=True)
    return results


def variant_lines(results: list[Measured], work: Workload, args: argparse.Namespace,
                  train_flops: float, peak: float) -> list[str]:
    plain = results[0].train_fps
    lines = [f"- ways to run it, batch {work.frames.shape[0]} x {TRAIN_LEN} frames: training frames/s (speed-up "
             f"over plain; first step, which pays for compilation), achieved FLOP/s, {args.short_rollout}-frame "
             "rollout frames/s at K = 1, and the largest difference from plain (loss and gradients relative, "
             "rollout pixels absolute):"]
    for r in results:
        if r.train_fps != r.train_fps:  # NaN: the variant failed
            lines.append(f"  - {r.name}: {r.diffs}")
            continue
        lines.append(f"  - {r.name}: **{r.train_fps:.2f} frames/s** (x{r.train_fps / plain:.2f}; first step "
                     f"{r.first_step_s:.1f} s), {r.train_fps * train_flops / 1e9:.0f} GFLOP/s = "
                     f"{100 * r.train_fps * train_flops / peak:.0f}% of peak; rollout {r.rollout_fps:.1f} "
                     f"frames/s; diff {r.diffs}")
    return lines


def batch_lines(base: VideoCVAE, device: torch.device, default: Execution, args: argparse.Namespace,
                train_flops: float, peak: float) -> list[str]:
    """Training throughput over batch sizes, plain beside default."""
    lines = ["- training frames/s by batch size (plain -> default, speed-up, default's share of peak):"]
    models = {name: execution.prepare(copy.deepcopy(base)) for name, execution in (("plain", Execution()),
                                                                                  ("default", default))}
    for batch in args.batches:
        work = Workload.make(batch, TRAIN_LEN, device)
        fps = {}
        for name, execution in (("plain", Execution()), ("default", default)):
            best = best_time(lambda: train_step(models[name], execution, work), 1, device)
            fps[name] = work.predicted / best
        lines.append(f"  - batch {batch}: {fps['plain']:.2f} -> {fps['default']:.2f} frames/s "
                     f"(x{fps['default'] / fps['plain']:.2f}), {100 * fps['default'] * train_flops / peak:.0f}% "
                     "of peak")
        print(lines[-1], flush=True)
    return lines


def rollout_lines(base: VideoCVAE, device: torch.device, default: Execution, args: argparse.Namespace,
                  rollout_flops: float, peak: float) -> list[str]:
    """The full validation rollout with K = 1 and K = 10 samples per step, plain beside default
    (one of them when the default runs the rollout as plain does: passes only split training batches)."""
    work = Workload.make(1, args.rollout, device)
    runs = [("plain", Execution())]
    if default.with_(frames_per_pass=None) != Execution():
        runs.append(("default", default))
    lines = [f"- one {args.rollout}-frame rollout, seconds ({' -> '.join(name for name, _ in runs)}), frames/s "
             "and share of peak:"]
    for samples in (1, 10):
        seconds = {}
        for name, execution in runs:
            model = execution.prepare(copy.deepcopy(base)).eval()
            rollout(model, execution, work, 9, samples)  # warm-up: allocation and compilation
            seconds[name] = timed(lambda: rollout(model, execution, work, args.rollout, samples), device)
        fps = (args.rollout - 1) / seconds[runs[-1][0]]
        speedup = f" (x{seconds['plain'] / seconds['default']:.2f})" if "default" in seconds else ""
        lines.append(f"  - K = {samples}: {' -> '.join(f'{v:.1f}' for v in seconds.values())} s{speedup}, "
                     f"{fps:.1f} frames/s, {100 * fps * samples * rollout_flops / peak:.0f}% of peak")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, ...")
    parser.add_argument("--dims", default="128,32,12,192", help="F,L,N,D")
    parser.add_argument("--batch", type=int, default=2, help="batch size of the variant comparison")
    parser.add_argument("--batches", default="1,2,4,8", help="batch sizes for plain vs default")
    parser.add_argument("--short-rollout", type=int, default=32, help="rollout length in the variant comparison")
    parser.add_argument("--rollout", type=int, default=630, help="length of the full rollout, K = 1 and 10")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats after the first call (best kept)")
    args = parser.parse_args()
    args.batches = [int(v) for v in args.batches.split(",")]
    device = resolve_device(args.device)
    dims = tuple(int(v) for v in args.dims.split(","))
    torch.manual_seed(0)
    base = VideoCVAE(*dims).to(device)
    default = Execution.default_for(device, dims[3], HEIGHT, WIDTH)
    work = Workload.make(args.batch, TRAIN_LEN, device)

    peak = attainable_flops(device, torch.float32)
    train_flops, rollout_flops = flops_per_frame(base, work)
    lines = [f"- model dims F,L,N,D = {dims}, {sum(p.numel() for p in base.parameters()) / 1e6:.2f} M "
             f"parameters, frames {HEIGHT}x{WIDTH}, device {device.type}",
             f"- FLOPs (torch.utils.flop_counter): **{train_flops / 1e9:.1f} GFLOP per training frame** "
             f"(forward + backward, teacher forced), **{rollout_flops / 1e9:.2f} GFLOP per rollout frame** "
             "(K = 1; K samples cost K times that)",
             f"- attainable peak: {peak / 1e9:.0f} GFLOP/s fp32 (the best of a few large matmuls and 1x1 convolutions); "
             "shares of peak below are against it"]
    if device.type == "cuda":
        lines.append(f"- bf16 matmul: {attainable_flops(device, torch.bfloat16) / 1e12:.0f} TFLOP/s")
    print("\n".join(lines), flush=True)
    lines += variant_lines(compare_variants(base, device, default, work, args), work, args, train_flops, peak)
    lines += batch_lines(base, device, default, args, train_flops, peak)
    lines += rollout_lines(base, device, default, args, rollout_flops, peak)
    record("Model speed: FLOPs, ways to run the model, batch sizes, full rollouts", lines)


if __name__ == "__main__":
    main()
