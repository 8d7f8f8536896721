"""How the model runs on a device: passes, memory format, compilation, precision.

These settings change speed, not what is computed (bf16 aside, which rounds):
bench/model_speed.py measures each against plain eager fp32 on the same
weights and inputs, and tests/test_execution.py checks the CPU defaults
against it. `Execution.default_for` holds the winners per device type.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import ContextManager

import torch
from torch import nn

# On a CPU, run the teacher-forced decode in passes whose widest activation
# (D channels x H x W per frame) stays near this size: 4 frames at the default
# 192 x 32 x 64 measured fastest (BENCHMARKS.md); narrower models take more frames.
CPU_PASS_ACTIVATION = 4 * 192 * 32 * 64


def resolve_device(name: str) -> torch.device:
    """A torch device by name; "auto" is CUDA where there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass(frozen=True)
class Execution:
    frames_per_pass: int | None = None   # None: the whole batch of frames in one pass
    channels_last: bool = False          # NHWC activations (oneDNN / cuDNN kernels)
    compiled: bool = False               # torch.compile each of the five modules
    bf16: bool = False                   # autocast convolutions to bfloat16
    cuda_graphs: bool = False            # compile with mode="reduce-overhead" (CUDA only)

    @classmethod
    def default_for(cls, device: torch.device, d_out_dim: int, height: int, width: int) -> "Execution":
        """The fastest settings that agree with eager fp32, as measured per device type."""
        if device.type == "cpu":
            # channels_last: 1.1x training and 1.2x rollout on an AVX-512 CPU, even on an AVX2 one.
            return cls(frames_per_pass=max(1, CPU_PASS_ACTIVATION // (d_out_dim * height * width)),
                       channels_last=True)
        return cls()  # unmeasured on GPUs so far: plain eager until bench/model_speed.py says otherwise

    def describe(self) -> str:
        parts = [f"{self.frames_per_pass} frames per pass" if self.frames_per_pass else "whole batch per pass"]
        parts += [name for name, on in (("channels_last", self.channels_last), ("compiled", self.compiled),
                                         ("bf16 autocast", self.bf16), ("CUDA graphs", self.cuda_graphs)) if on]
        return ", ".join(parts)

    def with_(self, **changes) -> "Execution":
        return replace(self, **changes)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Apply the memory format and compilation to `model` in place (state_dict keys unchanged)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.compiled or self.cuda_graphs:
            mode = "reduce-overhead" if self.cuda_graphs else None
            for module in model.children():
                module.compile(mode=mode)
        return model

    def autocast(self, device: torch.device) -> ContextManager:
        if self.bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
