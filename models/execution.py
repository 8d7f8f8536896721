"""How the model runs on a device: passes, memory format, compilation, precision, determinism.

These settings change speed, not what is computed (bf16 and TF32 aside, which round; compiled code
rounds differently): bench/model_speed.py measures each against plain eager fp32 on the same
weights and inputs, and tests/unit/models/test_execution.py checks the CPU defaults against it.
`Execution.default_for` holds the winners per device type; `Execution.for_run` adds a run's own
settings (precision, deterministic, compile), which its config records.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ContextManager

import torch
from torch import nn

from .backends import backend_flags
from .errors import DeviceError

if TYPE_CHECKING:
    from .config import TrainConfig

# On a CPU, run the teacher-forced decode in passes whose widest activation
# (D channels x H x W per frame) stays near this size: 4 frames at the default
# 192 x 32 x 64 measured fastest (BENCHMARKS.md); narrower models take more frames.
CPU_PASS_ACTIVATION = 4 * 192 * 32 * 64


def resolve_device(name: str) -> torch.device:
    """A torch device by name; "auto" is CUDA where there is one, else the CPU. A device this machine
    lacks is a one-line DeviceError (a run moved from a GPU machine to a CPU one, a typo)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device {name!r} is not a torch device (auto, cpu, cuda, cuda:1, mps, ...)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {name!r}: no CUDA GPU on this machine (torch {torch.__version__}); use "
                              "--device cpu or auto (a checkpoint resumes on any device)")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {name!r}: MPS is not available on this machine; use --device cpu or auto")
    return device


@dataclass(frozen=True)
class Execution:
    frames_per_pass: int | None = None   # None: the whole batch of frames in one pass
    channels_last: bool = False          # NHWC activations (oneDNN / cuDNN kernels)
    compiled: bool = False               # torch.compile each of the five modules
    bf16: bool = False                   # autocast convolutions to bfloat16
    cuda_graphs: bool = False            # compile with mode="reduce-overhead" (CUDA only)
    # A run's own settings (TrainConfig precision, deterministic, compile; see models.compiled):
    tf32: bool = False                   # TF32 matmuls and convolutions (CUDA only)
    deterministic: bool = False          # deterministic kernels; else cuDNN benchmark mode on CUDA
    compile: str = "off"                 # "off", "step" (training pass and rollout frames), "rollout"

    @classmethod
    def default_for(cls, device: torch.device, d_out_dim: int, height: int, width: int) -> "Execution":
        """The fastest settings that agree with eager fp32, as measured per device type."""
        if device.type == "cpu":
            # channels_last: 1.1x training and 1.2x rollout on an AVX-512 CPU, even on an AVX2 one.
            return cls(frames_per_pass=max(1, CPU_PASS_ACTIVATION // (d_out_dim * height * width)),
                       channels_last=True)
        return cls()  # unmeasured on GPUs so far: plain eager until bench/model_speed.py says otherwise

    @classmethod
    def for_run(cls, config: TrainConfig, device: torch.device) -> "Execution":
        """The device's defaults with the run's precision, determinism and compilation."""
        return cls.default_for(device, config.d_out_dim, config.height, config.width).with_(
            bf16=config.precision == "bf16", tf32=config.precision == "tf32", deterministic=config.deterministic,
            compile=config.compile)

    def settings(self, device: torch.device) -> ContextManager:
        """The backend flags of this execution, set for the block (models.backends)."""
        return backend_flags(device, self.tf32, self.deterministic)

    def describe(self) -> str:
        parts = [f"{self.frames_per_pass} frames per pass" if self.frames_per_pass else "whole batch per pass"]
        parts += [name for name, on in (("channels_last", self.channels_last), ("compiled", self.compiled),
                                         ("bf16 autocast", self.bf16), ("CUDA graphs", self.cuda_graphs),
                                         ("TF32", self.tf32), ("deterministic", self.deterministic)) if on]
        parts += [f"compile {self.compile}"] if self.compile != "off" else []
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
