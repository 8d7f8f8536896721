"""The ways of running the model compute what plain eager fp32 computes (on the CPU)."""
import copy

import pytest
import torch

from models.cvae import VideoCVAE
from models.execution import Execution

CPU = torch.device("cpu")
H, W = 16, 32


def _step(model, execution, frames, poses, forced):
    """Loss, flattened gradients and a rollout of the given model under `execution`."""
    with execution.autocast(CPU):
        pred, kl = model.reconstruct(frames, poses, forced, torch.Generator().manual_seed(1),
                                     execution.frames_per_pass)
    loss = (pred.float() - frames[:, 1:]).pow(2).mean(dim=(0, 2, 3, 4)).sum() + 1e-3 * kl.float().sum()
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    with torch.no_grad(), execution.autocast(CPU):
        frames_out = model.rollout(frames[:, 0], poses, 2, torch.Generator().manual_seed(2)).float()
    return loss.item(), grads, frames_out


@pytest.fixture(scope="module")
def trained_like():
    """A small model whose residual branches are no longer zero, and a batch to run it on."""
    torch.manual_seed(0)
    model = VideoCVAE(f_dim=16, l_dim=8, n_dim=4, d_out_dim=32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    frames, poses = torch.rand(3, 6, 3, H, W), torch.rand(3, 6, 3, H, W)
    return model, frames, poses


CPU_DEFAULT = Execution.default_for(CPU, d_out_dim=32, height=H, width=W)


@pytest.mark.parametrize("execution", [CPU_DEFAULT, Execution(frames_per_pass=4), Execution(channels_last=True)],
                         ids=lambda e: e.describe())
@pytest.mark.parametrize("forced", [True, False], ids=["teacher-forced", "free-running"])
def test_execution_matches_plain_eager_fp32(trained_like, execution, forced):
    model, frames, poses = trained_like
    ref_loss, ref_grads, ref_frames = _step(copy.deepcopy(model), Execution(), frames, poses, forced)
    loss, grads, out = _step(execution.prepare(copy.deepcopy(model)), execution, frames, poses, forced)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert ((grads - ref_grads).norm() / ref_grads.norm()).item() < 1e-4
    assert (out - ref_frames).abs().max().item() < 1e-4


def test_cpu_default_splits_wide_decodes_into_passes():
    assert Execution.default_for(CPU, 192, 32, 64).frames_per_pass == 4
    assert Execution.default_for(CPU, 32, 32, 64).frames_per_pass == 24
    assert Execution.default_for(torch.device("cuda"), 192, 32, 64).frames_per_pass is None
