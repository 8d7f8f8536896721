"""GPU check (issue 32): what the harness promises on a CUDA GPU, checked end to end in under ten minutes.

    python bench/gpu_check.py [--record]              # from the repository root, on a machine with a GPU
    python bench/gpu_check.py --device cpu --tiny     # a smoke test of this script on a CPU

On a machine without a GPU it says so in one line and exits 2 (nothing was checked). In order, each part
printing what it found:
1. the device and the settings a run starts with (precision, determinism, TF32 flags, cuDNN);
2. a tiny `harness train --deterministic` stopped by SIGTERM after its first epoch and resumed with
   --resume: its final weights and losses equal to an uninterrupted run's, bit for bit;
3. `harness generate` from that run's checkpoint;
4. the smoke study swept with `--pack 4`;
5. the CUDA tests (`pytest -m cuda`, tests/unit/models/test_cuda.py);
6. training frames/s and peak memory at the full dims (the lab's model, batch 2 x 16 frames),
   teacher-forced and free-running, pack 1, 4 and 16, eager and compiled, with the share of the
   device's fp32 matmul peak and of its memory (a pack that models/memory.py says would not fit is
   skipped, and so is what the time left would not cover);
7. one 630-frame rollout at the full dims, eager and with its frames compiled (a CUDA graph).
It prints a dated block for BENCHMARKS.md with the device's name, and appends it with --record.
Exits 1 when a check failed.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import record                      # noqa: E402
from model_speed import attainable_flops       # noqa: E402
from step_rates import members, rollout_rate, training_rate   # noqa: E402

from models.backends import CUBLAS_WORKSPACE_CONFIG, backend_flags   # noqa: E402
from models.config import TrainConfig                          # noqa: E402
from models.memory import available_bytes, run_memory         # noqa: E402
from models.records import LAST_CHECKPOINT                     # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = 570          # the whole check, under ten minutes
GiB = 2 ** 30
# The tiny run of parts 2 and 3: small dims, the options whose kernels determinism must cover.
TINY_RUN = ["--f-dim", "16", "--l-dim", "8", "--n-dim", "4", "--d-out-dim", "16", "--batch-size", "4",
            "--train-vi-len", "8", "--val-vi-len", "32", "--val-max-sequences", "1", "--ema", "0.9", "--tfr", "0.5",
            "--tfr-sde", "0", "--input-noise", "0.1", "--colour-augment", "--output", "residual", "--first-frame",
            "--appearance-attention", "--background-plate", "--deterministic"]


class Report:
    """The block's lines and the checks that failed."""

    def __init__(self, started: float):
        self.started = started
        self.lines: list[str] = []
        self.failed: list[str] = []

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.say(f"- {name}: {'ok' if ok else 'FAILED'}, {detail}")
        if not ok:
            self.failed.append(name)

    @property
    def seconds_left(self) -> float:
        return BUDGET_SECONDS - (time.perf_counter() - self.started)


def harness(*args: str, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


def settings(report: Report, device: torch.device) -> None:
    defaults = TrainConfig()
    report.say(f"Device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}"
               + (f", {torch.cuda.get_device_properties(device).total_memory / GiB:.0f} GiB, compute capability "
                  f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}, CUDA {torch.version.cuda}, cuDNN "
                  f"{torch.backends.cudnn.version()}" if device.type == "cuda" else ""))
    report.say(f"Run settings by default: precision {defaults.precision} (TF32 off), deterministic "
               f"{defaults.deterministic} (cuDNN benchmark mode on CUDA), compile {defaults.compile}; the process's "
               f"own flags outside a run: matmul {torch.backends.cuda.matmul.fp32_precision}, cuDNN conv "
               f"{torch.backends.cudnn.conv.fp32_precision}; {CUBLAS_WORKSPACE_CONFIG}="
               f"{os.environ.get(CUBLAS_WORKSPACE_CONFIG, '(unset)')}")


def train_stop_resume(report: Report, work: Path, device: str, data: Path) -> Path | None:
    """Part 2; returns the straight run's folder (for generate)."""
    common = ["--data", str(data), "--device", device, "--epochs", "4", *TINY_RUN]
    straight = harness("train", "--out", str(work / "straight"), *common, timeout=240)
    if straight.returncode != 0:
        report.check("train", False, last_line(straight))
        return None
    stopped = work / "stopped"
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", "train", "--out", str(stopped), *common],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoint = stopped / "checkpoints" / LAST_CHECKPOINT
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    epochs_before = torch.load(checkpoint, weights_only=True)["epoch"] if checkpoint.exists() else 0
    if process.returncode == 0:
        report.check("train, SIGTERM, resume", False, "the run ended before SIGTERM reached it: nothing to resume")
        return work / "straight"
    resumed = harness("train", "--out", str(stopped), "--resume", timeout=240)
    if resumed.returncode != 0:
        report.check("train, SIGTERM, resume", False, f"--resume: {last_line(resumed)}")
        return work / "straight"
    ours, theirs = (torch.load(folder / "checkpoints" / LAST_CHECKPOINT, weights_only=True)
                    for folder in (work / "straight", stopped))
    unequal = [name for name, value in theirs["model"].items() if not torch.equal(value, ours["model"][name])]
    same_losses = [r["loss"] for r in ours["history"]] == [r["loss"] for r in theirs["history"]]
    report.check("train, SIGTERM, resume", not unequal and same_losses,
                 f"stopped after epoch {epochs_before} of 4 (exit {process.returncode}), resumed: "
                 + ("weights and losses bit-equal to an uninterrupted run" if not unequal and same_losses else
                    f"{len(unequal)} weight tensors differ ({', '.join(unequal[:3])}), losses equal: {same_losses}"))
    return work / "straight"


def generate(report: Report, work: Path, device: str, data: Path, run: Path) -> None:
    result = harness("generate", "--ckpt", str(run / "checkpoints" / "best.pt"), "--out", str(work / "generated"),
                     "--data", str(data), "--device", device, "--length", "32", timeout=240)
    written = sorted(p.name for p in (work / "generated").glob("*")) if result.returncode == 0 else []
    report.check("generate", result.returncode == 0 and "submission.csv" in written,
                  f"wrote {', '.join(written)}" if written else last_line(result))


def sweep(report: Report, work: Path, device: str, pack: int) -> None:
    started = time.perf_counter()
    result = harness("sweep", "--study", "smoke", "--runs-dir", str(work / "runs"), "--device", device,
                     "--pack", str(pack), timeout=max(60.0, report.seconds_left - 240))
    report.check(f"smoke sweep --pack {pack}", result.returncode == 0,
                 f"{time.perf_counter() - started:.0f} s" + ("" if result.returncode == 0 else f": {last_line(result)}"))


def cuda_tests(report: Report) -> None:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                             "tests/unit/models/test_cuda.py"], cwd=ROOT, capture_output=True, text=True,
                            timeout=max(60.0, report.seconds_left - 150))
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else last_line(result)
    report.check("pytest -m cuda", result.returncode in (0, 5), f"{summary} ({time.perf_counter() - started:.0f} s)")


def flops_per_frame(config: TrainConfig, forced: bool, device: torch.device) -> float:
    """FLOPs of one training frame (forward and backward), by torch's flop counter."""
    model = members(config, 1, device)[0]
    shape = (config.batch_size, config.train_vi_len, 3, config.height, config.width)
    frames = torch.rand(shape, device=device)
    with FlopCounterMode(display=False) as counter:
        pred, kl = model.reconstruct(frames, frames, forced, eps=model.latent_noise(frames, None),
                                     reference=frames[:, 0])
        (pred.pow(2).mean() + kl.sum()).backward()
    return counter.get_total_flops() / (config.batch_size * config.train_vi_len)


def throughput(report: Report, config: TrainConfig, packs: list[int], compiled: list[bool],
               device: torch.device) -> None:
    """Part 6."""
    with backend_flags(device, tf32=False, deterministic=False):      # the IEEE fp32 peak: TF32 off
        peak_flops = attainable_flops(device, torch.float32)
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    memory = run_memory(config)
    report.say(f"Training at F/L/N/D {config.f_dim}/{config.l_dim}/{config.n_dim}/{config.d_out_dim}, batch "
               f"{config.batch_size} x {config.train_vi_len} frames per member, precision {config.precision}; "
               f"attainable fp32 matmul peak {peak_flops / 1e12:.1f} TFLOP/s; estimated peak per member "
               f"{memory.step_peak / GiB:.2f} GiB:")
    flops = {forced: flops_per_frame(config, forced, device) for forced in (True, False)}
    # Every eager figure before any compiled one: compiling takes minutes, and what the time left does not
    # cover is skipped.
    for compile in compiled:
        for forced in (True, False):
            for pack in packs:
                label = f"  - {'teacher-forced' if forced else 'free-running'}, pack {pack}, " \
                        f"{'compiled' if compile else 'eager'}:"
                free = available_bytes(device)
                if free is not None and memory.pack_peak(pack) > 0.9 * free:
                    report.say(f"{label} skipped, needs {memory.pack_peak(pack) / GiB:.1f} GiB, {free / GiB:.1f} free")
                    continue
                if report.seconds_left < (150 if compile else 60):
                    report.say(f"{label} skipped, the time left is for the rollout")
                    continue
                try:
                    rate, _ = training_rate(config, pack, forced, compile, device, repeats=3)
                except Exception as err:        # a variant that does not run (vmap under compile) is a finding
                    report.say(f"{label} failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
                    continue
                achieved = rate.frames_per_second * flops[forced]
                memory_text = "" if rate.peak_bytes is None else (
                    f", peak {rate.peak_bytes / GiB:.2f} GiB ({100 * rate.peak_bytes / total:.0f}% of the device; "
                    f"estimated {memory.pack_peak(pack) / GiB:.2f})")
                report.say(f"{label} {rate.frames_per_second:.0f} frames/s, {achieved / 1e12:.2f} TFLOP/s "
                           f"({100 * achieved / peak_flops:.0f}% of the fp32 peak){memory_text}, first call "
                           f"{rate.first_seconds:.1f} s")
                torch.cuda.empty_cache() if device.type == "cuda" else None


def rollout(report: Report, config: TrainConfig, length: int, device: torch.device) -> None:
    """Part 7."""
    eager, eager_frames = rollout_rate(config, length, False, device)
    line = f"- one {length}-frame rollout (K = 1): eager {(length - 1) / eager.frames_per_second:.1f} s " \
           f"({eager.frames_per_second:.0f} frames/s)"
    if report.seconds_left > 60 and device.type == "cuda":
        graphed, graphed_frames = rollout_rate(config, length, True, device)
        difference = (graphed_frames - eager_frames).abs().max().item()
        line += (f"; frames compiled as a CUDA graph {(length - 1) / graphed.frames_per_second:.1f} s "
                 f"(x{graphed.frames_per_second / eager.frames_per_second:.1f}, first call {graphed.first_seconds:.0f} "
                 f"s), largest pixel difference {difference:.1e}")
    report.say(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu with --tiny to smoke-test this script")
    parser.add_argument("--tiny", action="store_true", help="tiny dims and packs for the measurements, no compiling")
    parser.add_argument("--record", action="store_true", help="append the block to BENCHMARKS.md")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA GPU on this machine (torch {torch.__version__}): nothing checked; "
              "`python bench/gpu_check.py --device cpu --tiny` smoke-tests this script", file=sys.stderr)
        sys.exit(2)
    device = torch.device(args.device)
    report = Report(time.perf_counter())
    settings(report, device)
    # Deterministic cuBLAS needs its workspace fixed before this process's first matmul.
    os.environ.setdefault(CUBLAS_WORKSPACE_CONFIG, ":4096:8")
    full = TrainConfig(device=args.device)
    config = full.replace(f_dim=16, l_dim=8, n_dim=4, d_out_dim=16, batch_size=2, train_vi_len=4) if args.tiny \
        else full
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        work = Path(scratch)
        data = work / "data"
        made = harness("data", "synth", "--out", str(data), "--train-videos", "4", "--val-videos", "1",
                       "--test-videos", "1", "--frames", "64", "--val-frames", "64", timeout=120)
        if made.returncode != 0:
            report.check("synthetic data", False, last_line(made))
        else:
            run = train_stop_resume(report, work, args.device, data)
            if run is not None:
                generate(report, work, args.device, data, run)
            sweep(report, work, args.device, 2 if args.tiny else 4)
    cuda_tests(report)
    throughput(report, config, [1, 2] if args.tiny else [1, 4, 16], [False] if args.tiny else [False, True], device)
    rollout(report, config, 32 if args.tiny else 630, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke test of the script)"
    report.say(f"Checks failed: {', '.join(report.failed) or 'none'}; "
               f"{time.perf_counter() - report.started:.0f} s in all")
    record(f"GPU check: {name}", report.lines, append=args.record)
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
