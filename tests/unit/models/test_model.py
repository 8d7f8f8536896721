"""Module shapes and the two ways of running the CVAE."""
import pytest
import torch

from models.cvae import (Decoder_Fusion, Gaussian_Predictor, Generator, Label_Encoder, RGB_Encoder,
                         VideoCVAE)

H, W = 8, 16


def test_default_modules_keep_full_resolution_with_the_design_widths():
    x = torch.rand(2, 3, H, W)
    fx, fp = RGB_Encoder(128)(x), Label_Encoder(32)(x)
    assert fx.shape == (2, 128, H, W) and fp.shape == (2, 32, H, W)
    z, mu, logvar = Gaussian_Predictor(160, 12)(fx, fp, torch.randn(2, 12, H, W))
    assert z.shape == mu.shape == logvar.shape == (2, 12, H, W)
    fused = Decoder_Fusion(172, 192)(fx, fp, z)
    assert fused.shape == (2, 192, H, W)
    frame = Generator(192)(fused)
    assert frame.shape == (2, 3, H, W)
    assert 0 <= frame.min() and frame.max() <= 1


def test_default_model_has_about_1_59_million_parameters():
    count = sum(p.numel() for p in VideoCVAE().parameters())
    assert count == pytest.approx(1.59e6, rel=0.01)


@pytest.fixture
def small_model():
    torch.manual_seed(0)
    return VideoCVAE(f_dim=16, l_dim=8, n_dim=4, d_out_dim=16)


def test_posterior_sees_the_current_ground_truth_frame(small_model):
    frames, poses = torch.rand(2, 5, 3, H, W), torch.rand(2, 5, 3, H, W)
    _, kl = small_model.reconstruct(frames, poses, True, torch.Generator().manual_seed(0))
    changed = frames.clone()
    changed[:, 3] = torch.rand(2, 3, H, W)
    _, kl2 = small_model.reconstruct(changed, poses, True, torch.Generator().manual_seed(0))
    # Only step 3's posterior (index 2 of steps 1..4) sees frame 3.
    differs = ~torch.isclose(kl, kl2)
    assert differs.tolist() == [False, False, True, False]


def _manual_decode(model, frames, poses, teacher_forcing, seed):
    """Step-by-step reference: decoder fed ground truth (teacher forcing) or its own prediction."""
    b, t = frames.shape[:2]
    eps = torch.randn((b * (t - 1), model.n_dim, H, W), generator=torch.Generator().manual_seed(seed))
    eps = eps.unflatten(0, (b, t - 1))
    pose_feat = model.label_encoder(poses.flatten(0, 1)).unflatten(0, (b, t))
    prev = frames[:, 0]
    preds = []
    for step in range(1, t):
        fx = model.frame_encoder(frames[:, step])
        z, _, _ = model.gaussian_predictor(fx, pose_feat[:, step], eps[:, step - 1])
        pred = model.decode(prev, model.frame_encoder(prev), pose_feat[:, step], z)
        preds.append(pred)
        prev = frames[:, step] if teacher_forcing else pred
    return torch.stack(preds, dim=1)


@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_reconstruct_matches_a_step_by_step_reference(small_model, teacher_forcing):
    frames, poses = torch.rand(2, 5, 3, H, W), torch.rand(2, 5, 3, H, W)
    small_model.eval()  # batch-norm statistics must not depend on how frames are batched
    pred, _ = small_model.reconstruct(frames, poses, teacher_forcing, torch.Generator().manual_seed(3))
    expected = _manual_decode(small_model, frames, poses, teacher_forcing, 3)
    torch.testing.assert_close(pred, expected, atol=1e-5, rtol=1e-4)


def test_teacher_forcing_changes_the_decoder_input(small_model):
    frames, poses = torch.rand(2, 5, 3, H, W), torch.rand(2, 5, 3, H, W)
    small_model.eval()
    forced, _ = small_model.reconstruct(frames, poses, True, torch.Generator().manual_seed(1))
    free, _ = small_model.reconstruct(frames, poses, False, torch.Generator().manual_seed(1))
    torch.testing.assert_close(forced[:, 0], free[:, 0])       # step 1 sees frame 0 either way
    assert not torch.allclose(forced[:, 1:], free[:, 1:])


def test_rollout_starts_from_the_given_frame_and_is_repeatable(small_model):
    first, poses = torch.rand(3, 3, H, W), torch.rand(3, 7, 3, H, W)
    small_model.eval()
    out = small_model.rollout(first, poses, samples=4, generator=torch.Generator().manual_seed(5), pose_chunk=3)
    again = small_model.rollout(first, poses, samples=4, generator=torch.Generator().manual_seed(5))
    assert out.shape == poses.shape
    torch.testing.assert_close(out[:, 0], first)
    torch.testing.assert_close(out, again)   # pose chunking does not change the result
    assert 0 <= out.min() and out.max() <= 1


def test_passes_of_a_few_frames_give_the_same_result(small_model):
    frames, poses = torch.rand(2, 6, 3, H, W), torch.rand(2, 6, 3, H, W)
    whole, kl = small_model.reconstruct(frames, poses, True, torch.Generator().manual_seed(2))
    passes, kl_passes = small_model.reconstruct(frames, poses, True, torch.Generator().manual_seed(2), 3)
    torch.testing.assert_close(passes, whole, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(kl_passes, kl, atol=1e-3, rtol=1e-4)
