"""A training member's memory at the dims the studies use (issue 32): what models/memory.py estimates
before a run starts, and, on this machine, what a real training pass measures.

    python bench/member_memory.py [--measure smoke,kl_schedules_cpu] [--no-record]

For each setting (the smoke study's, the CPU study's, the lab's full dims: each study's reference
trial, studies/*.yaml): the state (weights, gradients, Adam, the average, the epoch's start copy), the
activations a teacher-forced and a free-running pass save for backward (on the meta device: they do not
depend on the device), the step's estimated peak and the peak of a pack of 4 and 16 beside the data.
For the settings in --measure it also runs the passes on this machine's CPU: the saved bytes there
(equal to meta's, or the estimate is wrong) and the peak bytes of live tensors through forward and
backward (models.memory.PeakTensorBytes), as a share of the saved bytes.
"""
from __future__ import annotations

import argparse
import time

import torch

from common import record

from harness.spec import load_study_spec, train_values
from models.config import TrainConfig
from models.cvae import VideoCVAE
from models.memory import PeakTensorBytes, run_memory, saved_activation_bytes

SETTINGS = ("smoke", "kl_schedules_cpu", "kl_schedules")
MiB = 2 ** 20


def reference_config(study: str) -> TrainConfig:
    spec = load_study_spec(study)
    return TrainConfig.from_dict(train_values(spec, spec.enqueue[0] if spec.enqueue else {}))


def measured(config: TrainConfig, forced: bool) -> tuple[int, int, float]:
    """(saved bytes, peak live bytes, seconds) of one forward and backward pass on the CPU."""
    model = VideoCVAE.from_config(config)
    shape = (config.batch_size, config.train_vi_len, 3, config.height, config.width)
    frames, poses = torch.rand(shape), torch.rand(shape)
    saved = saved_activation_bytes(model, config, forced)
    started = time.perf_counter()
    with PeakTensorBytes() as peak:
        pred, kl = model.reconstruct(frames, poses, forced, eps=model.latent_noise(frames, None),
                                     reference=frames[:, 0])
        (pred.pow(2).mean() + kl.sum()).backward()
    return saved, peak.peak, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", default="smoke,kl_schedules_cpu",
                        help="settings also measured on the CPU (kl_schedules, the full dims, takes minutes)")
    parser.add_argument("--no-record", action="store_true", help="print the block, do not append it")
    args = parser.parse_args()
    lines = ["Per member (batch x frames of a training step); MiB. Estimate: models/memory.py on the meta device.",
             "", "| setting | dims F/L/N/D, batch x frames | state | saved, teacher-forced | saved, free-running "
             "| step peak (est.) | pack 4 | pack 16 | measured on the CPU: saved, peak of live tensors |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for study in SETTINGS:
        config = reference_config(study)
        with torch.device("meta"):
            meta = VideoCVAE.from_config(config)
        saved = {forced: saved_activation_bytes(meta, config, forced) for forced in (True, False)}
        memory = run_memory(config)
        cpu = "not measured"
        if study in args.measure.split(","):
            parts = []
            for forced in (True, False):
                real, peak, seconds = measured(config, forced)
                assert real == saved[forced], f"{study}: the CPU saved {real} bytes, meta {saved[forced]}"
                parts.append(f"{'TF' if forced else 'FR'} {real / MiB:.0f} (= meta), peak {peak / MiB:.0f} "
                             f"(x{peak / real:.2f}, {seconds:.0f} s)")
            cpu = "; ".join(parts)
        dims = f"{config.f_dim}/{config.l_dim}/{config.n_dim}/{config.d_out_dim}, {config.batch_size} x " \
               f"{config.train_vi_len}"
        lines.append(f"| {study} | {dims} | {memory.state / MiB:.1f} | {saved[True] / MiB:.0f} | "
                     f"{saved[False] / MiB:.0f} | {memory.step_peak / MiB:.0f} | {memory.pack_peak(4) / MiB:.0f} | "
                     f"{memory.pack_peak(16) / MiB:.0f} | {cpu} |")
    lines += ["", "Packs add the data once (not included here) and a stacked copy of the weights per member."]
    record("Member memory", lines, append=not args.no_record)


if __name__ == "__main__":
    main()
