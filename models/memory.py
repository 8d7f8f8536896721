"""What a training run needs of its device's memory, known before it starts, so that a pack can be sized
to the memory there is (harness/worker/pack_fit.py) instead of being lost to an out-of-memory error.

A training step's peak is the run's state (weights, gradients, Adam's moments, the weight average, and
the copy of them an epoch keeps to rewind to) plus the activations its forward pass saves for the
backward pass, plus the gradients and temporaries alive while that runs. The saved activations do not
depend on the device: they are measured on the meta device (no memory, no compute, a second or so),
from the tensors torch.autograd hands to saved_tensors_hooks; a CPU run saves the same bytes
(tests/unit/models/test_gpu_readiness.py). A packed pass saves its members' activations side by side
(measured: M members save M times one member's, within 1%) and stacks their weights once more.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .config import TrainConfig
from .cvae import VideoCVAE
from .data import DanceData

# Beyond the saved activations, the backward pass holds gradients of activations and temporaries:
# measured at 3-8% of the saved bytes on the CPU (`PeakTensorBytes`, at the smoke and CPU-study dims);
# the rest of this margin is for a GPU allocator's rounding and cuDNN's workspaces.
TRANSIENT = 0.25


@dataclass(frozen=True)
class RunMemory:
    """Bytes one training run holds on its device."""
    state: int           # weights, gradients, Adam's moments and steps, the weight average, the epoch's start copy
    activations: int     # saved for the backward pass: the larger of a teacher-forced and a free-running pass
    weights: int         # the weights alone (a packed pass stacks them once more)
    data: int = 0        # training runs and validation sequences on the device, one copy for a whole pack

    @property
    def step_peak(self) -> int:
        """One run's peak in a training step, its data apart."""
        return self.state + round(self.activations * (1 + TRANSIENT))

    def pack_peak(self, members: int) -> int:
        """The peak of `members` such runs trained as one pack (one alone is not packed)."""
        stacked = self.weights if members > 1 else 0
        return members * (self.step_peak + stacked) + self.data


def run_memory(config: TrainConfig, data: DanceData | None = None) -> RunMemory:
    """The memory a run of `config` (on `data`, when given) will need, measured on the meta device."""
    with torch.device("meta"):
        model = VideoCVAE.from_config(config)
    weights = sum(_bytes(p) for p in model.parameters())
    buffers = sum(_bytes(b) for b in model.buffers())
    steps = 4 * len(list(model.parameters()))          # fused Adam's float32 step count per parameter
    averaged = weights + buffers if config.ema else 0
    kept = weights + buffers + 2 * weights + steps + averaged        # what the epoch's start copy holds
    state = kept + weights + kept                                     # ... the live state, gradients, the copy
    activations = max(saved_activation_bytes(model, config, forced) for forced in (True, False))
    return RunMemory(state, activations, weights, data_bytes(config, data) if data is not None else 0)


def saved_activation_bytes(model: VideoCVAE, config: TrainConfig, teacher_forcing: bool) -> int:
    """Bytes of the tensors one training pass of `model` (on any device; meta costs nothing) saves for
    its backward pass: each storage once, the model's own weights and buffers apart."""
    device = next(model.parameters()).device
    own = {_storage_id(t) for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        if _storage_id(tensor) not in own:
            saved[_storage_id(tensor)] = tensor.untyped_storage().nbytes()
        return tensor

    shape = (config.batch_size, config.train_vi_len, 3, config.height, config.width)
    frames, poses = torch.rand(shape, device=device), torch.rand(shape, device=device)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        model.reconstruct(frames, poses, teacher_forcing, eps=model.latent_noise(frames, None),
                          reference=frames[:, 0])
    return sum(saved.values())


def data_bytes(config: TrainConfig, data: DanceData) -> int:
    """The training runs and validation sequences that a run of `config` puts on its device."""
    runs = [*data.train_runs(config.train_vi_len, config.partial),
            *[t for t in data.val_runs(config.val_vi_len, config.val_max_sequences) if t is not None]]
    return sum(_bytes(t) for t in runs)


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a new pack: the GPU's free memory, the host's available memory for the CPU
    (None where neither is known)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


class PeakTensorBytes(TorchDispatchMode):
    """The peak bytes of tensors made inside the block and alive at once (activations, gradients,
    temporaries; not the tensors that existed before): a measurement on the CPU, which has no
    allocator statistics, of what torch.cuda.max_memory_allocated tells on a GPU."""

    def __init__(self):
        super().__init__()
        self.peak = 0
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and _storage_id(tensor) not in self._live:
                storage = tensor.untyped_storage()
                self._live[_storage_id(tensor)] = (StorageWeakRef(storage), storage.nbytes())
        self._live = {key: entry for key, entry in self._live.items() if not entry[0].expired()}
        self.peak = max(self.peak, sum(size for _, size in self._live.values()))
        return out


def _storage_id(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


def _bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
