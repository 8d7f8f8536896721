"""Packed members compute what each would compute alone: predictions, KL, gradients, batch-norm
statistics, and the weights after a few optimizer steps with different learning rates."""
import pytest
import torch

from models.cvae import VideoCVAE
from models.packing import PackedModels

H, W, B, T = 8, 16, 2, 4
OPTIONS = {"output": "residual", "first_frame": True}
# The bias of the convolution before the label encoder's batch norm: the norm subtracts it again, so its
# gradient is zero up to rounding, and Adam scales that rounding noise up to whole steps, in any run.
NOISE_DRIVEN = "label_encoder.net.1.bias"


def member(seed: int, **options) -> VideoCVAE:
    torch.manual_seed(seed)
    model = VideoCVAE(f_dim=16, l_dim=8, n_dim=4, d_out_dim=16, **options)
    with torch.no_grad():   # away from the identity init, so that the members differ everywhere
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def inputs(m: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(m, B, T, 3, H, W, generator=g)
    poses = torch.rand(m, B, T, 3, H, W, generator=g)
    eps = torch.randn(m, B * (T - 1), 4, H, W, generator=g)
    return frames, poses, eps


def loss_of(pred: torch.Tensor, frames: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
    return (pred - frames[:, 1:]).pow(2).mean(dim=(0, 2, 3, 4)).sum() + 1e-3 * kl.sum()


@pytest.mark.parametrize("teacher_forcing", [True, False])
@pytest.mark.parametrize("extra", [{}, {"background_plate": True, "appearance_attention": True,
                                             "appearance_colours": True}])
def test_a_packed_pass_equals_each_members_own(teacher_forcing, extra):
    alone = [member(seed, **OPTIONS, **extra) for seed in range(3)]
    packed = PackedModels([member(seed, **OPTIONS, **extra) for seed in range(3)])
    frames, poses, eps = inputs(3)
    reference = frames[:, :, 0] * 0.5

    pred, kl = packed.reconstruct(frames, poses, eps, teacher_forcing, reference=reference)
    sum(loss_of(pred[i], frames[i], kl[i]) for i in range(3)).backward()
    for i, model in enumerate(alone):
        own_pred, own_kl = model.reconstruct(frames[i], poses[i], teacher_forcing, reference=reference[i], eps=eps[i])
        loss_of(own_pred, frames[i], own_kl).backward()
        torch.testing.assert_close(pred[i], own_pred, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(kl[i], own_kl, atol=1e-5, rtol=1e-4)
        for (name, p), q in zip(model.named_parameters(), packed.members[i].parameters()):
            torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-3, msg=name)
        for (name, b), c in zip(model.named_buffers(), packed.members[i].buffers()):
            torch.testing.assert_close(c, b, msg=name)     # batch-norm statistics written back
    assert not torch.allclose(pred[0], pred[1])


def test_packed_training_with_own_learning_rates_equals_separate_training():
    rates = (1e-3, 3e-3)
    alone = [member(seed, **OPTIONS) for seed in range(2)]
    packed = PackedModels([member(seed, **OPTIONS) for seed in range(2)])
    optimizers = [torch.optim.Adam(m.parameters(), lr=lr) for m, lr in zip(alone, rates)]
    packed_optimizers = [torch.optim.Adam(m.parameters(), lr=lr) for m, lr in zip(packed.members, rates)]
    for step in range(3):
        frames, poses, eps = inputs(2, seed=step)
        forced = step == 0
        pred, kl = packed.reconstruct(frames, poses, eps, forced)
        losses = [loss_of(pred[i], frames[i], kl[i]) for i in range(2)]
        for optimizer in packed_optimizers:
            optimizer.zero_grad()
        sum(losses).backward()
        for i, (model, optimizer) in enumerate(zip(alone, optimizers)):
            own_pred, own_kl = model.reconstruct(frames[i], poses[i], forced, eps=eps[i])
            own = loss_of(own_pred, frames[i], own_kl)
            optimizer.zero_grad()
            own.backward()
            torch.testing.assert_close(losses[i], own, atol=1e-6, rtol=1e-5)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            torch.nn.utils.clip_grad_norm_(packed.members[i].parameters(), 1.0)
            optimizer.step()
            packed_optimizers[i].step()
    for model, packed_member in zip(alone, packed.members):
        for (name, p), q in zip(model.named_parameters(), packed_member.parameters()):
            if name == NOISE_DRIVEN:
                continue
            # Adam divides by the gradients' size, so small ones' rounding shows: within 5% of one step
            torch.testing.assert_close(q, p, atol=0.05 * max(rates), rtol=0)


def test_members_must_share_an_architecture():
    with pytest.raises(ValueError, match="share one architecture"):
        PackedModels([member(0), member(1, first_frame=True)])
