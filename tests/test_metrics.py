import math

import pytest
import torch

from models.metrics import mean_rollout_psnr, psnr_per_frame


def test_psnr_matches_a_hand_computation():
    truth = torch.zeros(2, 3, 4, 4)
    pred = truth.clone()
    pred[0] += 0.1                     # MSE 0.01 -> 20 dB
    pred[1, :, :2] += 0.2              # half the pixels off by 0.2: MSE 0.02 -> 16.9897 dB
    psnr = psnr_per_frame(pred, truth)
    assert psnr.tolist() == pytest.approx([20.0, 10 * math.log10(50)], rel=1e-5)


def test_psnr_keeps_leading_dims_and_caps_perfect_frames():
    truth = torch.rand(2, 5, 3, 4, 4)
    psnr = psnr_per_frame(truth, truth)
    assert psnr.shape == (2, 5)
    assert torch.all(psnr == 100.0)


def test_mean_skips_the_given_first_frame():
    per_frame = torch.tensor([100.0, 20.0, 30.0])
    assert mean_rollout_psnr(per_frame) == 25.0
