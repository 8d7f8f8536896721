"""Several models of one architecture run as one batched model: `torch.func` stacks their weights and
`vmap` runs the forward pass once for all of them (convolutions become grouped convolutions).

Each member keeps its own parameters (and so its own optimizer, gradient clipping and checkpoint):
the stacked weights are built from them in every pass, and backprop hands each member the gradient
of its own loss. Random draws stay outside the batched pass, drawn by each member's own generator,
so a member computes what it would compute alone (tests/test_packing.py; bench/packing.py).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, vmap

from .cvae import VideoCVAE


class _Reconstruct(nn.Module):
    """VideoCVAE.reconstruct as a module's forward, which functional_call can run with stacked weights."""

    def __init__(self, model: VideoCVAE):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, poses: torch.Tensor, eps: torch.Tensor, reference: torch.Tensor | None,
                teacher_forcing: bool, frames_per_pass: int | None, detach_feedback: bool):
        return self.model.reconstruct(frames, poses, teacher_forcing, frames_per_pass=frames_per_pass,
                                      detach_feedback=detach_feedback, reference=reference, eps=eps)


class PackedModels:
    """`members`, models of the same architecture, run together; their inputs stacked on a new dim 0."""

    def __init__(self, members: list[VideoCVAE]):
        shapes = {tuple((k, v.shape) for k, v in m.state_dict().items()) for m in members}
        if len(shapes) != 1:
            raise ValueError("packed members must share one architecture (the same dims and options)")
        self.members = members
        # A weightless copy: functional_call supplies the weights.
        self.template = _Reconstruct(copy.deepcopy(members[0]).to("meta"))

    @staticmethod
    def _stacked(members: list[VideoCVAE]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Each parameter and buffer of the members stacked on a new dim 0, under the template's names."""
        def stack(named: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
            return {f"model.{name}": torch.stack([tensors[name] for tensors in named]) for name in named[0]}
        return (stack([dict(m.named_parameters()) for m in members]),
                stack([dict(m.named_buffers()) for m in members]))

    def reconstruct(self, frames: torch.Tensor, poses: torch.Tensor, eps: torch.Tensor, teacher_forcing: bool,
                    reference: torch.Tensor | None = None, frames_per_pass: int | None = None,
                    detach_feedback: bool = False, which: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The VideoCVAE.reconstruct of the members `which` (default: all), M of them, each on its own
        inputs: frames, poses [M, B, T, 3, H, W], eps [M, B * (T-1), N, H, W] (each member's
        `latent_noise`), reference [M, B, 3, H, W] or None. Returns predictions [M, B, T-1, 3, H, W]
        and KL per step [M, T-1]. Batch-norm statistics that the pass updates go back to the members."""
        members = self.members if which is None else [self.members[i] for i in which]
        params, buffers = self._stacked(members)
        training = members[0].training
        self.template.train(training)

        def one(p, b, f, po, e, r):
            return functional_call(self.template, {**p, **b},
                                   (f, po, e, r, teacher_forcing, frames_per_pass, detach_feedback))

        pred, kl = vmap(one, in_dims=(0, 0, 0, 0, 0, None if reference is None else 0))(
            params, buffers, frames, poses, eps, reference)
        if training:
            with torch.no_grad():
                for i, member in enumerate(members):
                    for name, buffer in member.named_buffers():
                        buffer.copy_(buffers[f"model.{name}"][i])
        return pred, kl
