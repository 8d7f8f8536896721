"""The compiled decode path (TrainConfig `compile`): which of a model's calls run through torch.compile.

- "step": the training pass (VideoCVAE.reconstruct: forward, and its backward through AOTAutograd),
  one graph per way of decoding (teacher forced or not, feedback detached or not), and each rollout
  frame (VideoCVAE.frame_step) as below;
- "rollout": each rollout frame only (validation, baselines, `harness generate`); training stays eager.
  A rollout frame has the same shapes for all of a sequence's 630 frames, so on CUDA it is captured as
  a CUDA graph (mode "reduce-overhead"): a frame is then one launch instead of about 150 small ones,
  which at a batch of a few sequences is what bounds a GPU rollout.
A packed training pass (models.packing: vmap over the members' stacked weights) runs eager under either:
compiling it is unmeasured (bench/gpu_check.py times it on a GPU).

The model is compiled through its bound methods, never in place (nn.Module.compile): a trainer's weight
average is a deep copy of its model, and a copied module would keep calling the original's compiled
code. Compiled code rounds differently from eager (tests/unit/models/test_compile.py bounds it).
"""
from __future__ import annotations

from typing import Callable

import torch

from .cvae import VideoCVAE

# torch.compile's backend: inductor generates kernels (minutes of C++ compiling on a CPU); the tests trace
# through "aot_eager" (the same graphs, forward and backward, run by eager kernels).
BACKEND = "inductor"


def training_pass(model: VideoCVAE, compile: str) -> Callable | None:
    """`model.reconstruct` compiled with "step"; None (the model's own, eager) otherwise."""
    return torch.compile(model.reconstruct, backend=BACKEND) if compile == "step" else None


def rollout_frame(model: VideoCVAE, compile: str, device: torch.device) -> Callable:
    """`model.frame_step`, compiled with "step" or "rollout" (as a CUDA graph on CUDA)."""
    if compile == "off":
        return model.frame_step
    if device.type != "cuda":
        return torch.compile(model.frame_step, backend=BACKEND)
    graphed = torch.compile(model.frame_step, backend=BACKEND, mode="reduce-overhead")

    def frame(*args, **kwargs) -> torch.Tensor:
        # Each call replays into the same output memory: a new step begins, and the frame is copied
        # out before the next replay overwrites it (the rollout keeps it and feeds it back).
        torch.compiler.cudagraph_mark_step_begin()
        return graphed(*args, **kwargs).clone()
    return frame
