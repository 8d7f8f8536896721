"""The compiled decode path against eager on this machine (TrainConfig `compile`, models/compiled.py).

    python bench/compile_speed.py [--study kl_schedules_cpu] [--free-running] [--rollout 60] [--no-record]

At a study's reference dims (studies/*.yaml): the teacher-forced training step (forward and backward;
with --free-running also the free-running one, whose graph unrolls every frame and compiles for
minutes on a CPU) eager and compiled (`compile: step`), and a rollout of one sequence eager and with
each frame compiled (`compile: rollout`): frames/s, the first call's seconds (compilation, on a cold
cache), and how far compiled results lie from eager ones.
"""
from __future__ import annotations

import argparse

import torch

from common import record
from member_memory import reference_config
from step_rates import rollout_rate, training_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="kl_schedules_cpu", help="whose reference dims (default: the CPU study)")
    parser.add_argument("--free-running", action="store_true", help="also the free-running training step")
    parser.add_argument("--rollout", type=int, default=60, help="frames of the rollout (default 60)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print the block, do not append it")
    args = parser.parse_args()
    device = torch.device("cpu")
    config = reference_config(args.study)
    lines = [f"`{args.study}` reference dims (F/L/N/D {config.f_dim}/{config.l_dim}/{config.n_dim}/"
             f"{config.d_out_dim}, batch {config.batch_size} x {config.train_vi_len} frames, "
             f"{config.height}x{config.width}), CPU defaults (passes, channels_last); best of {args.repeats}:", ""]
    for forced in (True, False) if args.free_running else (True,):
        eager, eager_loss = training_rate(config, 1, forced, False, device, args.repeats)
        built, built_loss = training_rate(config, 1, forced, True, device, args.repeats)
        lines.append(f"- training step, {'teacher-forced' if forced else 'free-running'}: eager "
                     f"{eager.frames_per_second:.1f} frames/s, compiled {built.frames_per_second:.1f} frames/s "
                     f"(x{built.frames_per_second / eager.frames_per_second:.2f}; first call {built.first_seconds:.0f} s "
                     f"against {eager.first_seconds:.1f} s); loss rel. difference "
                     f"{abs(built_loss - eager_loss) / abs(eager_loss):.1e}")
    eager, eager_frames = rollout_rate(config, args.rollout, False, device)
    built, built_frames = rollout_rate(config, args.rollout, True, device)
    lines.append(f"- {args.rollout}-frame rollout (K = 1): eager {eager.frames_per_second:.1f} frames/s, compiled "
                 f"frames {built.frames_per_second:.1f} frames/s (x{built.frames_per_second / eager.frames_per_second:.2f}; "
                 f"first call {built.first_seconds:.0f} s against {eager.first_seconds:.1f} s); largest pixel "
                 f"difference {(built_frames - eager_frames).abs().max().item():.1e}")
    record("Compiled decode path", lines, append=not args.no_record)


if __name__ == "__main__":
    main()
