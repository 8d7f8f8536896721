import math

import pytest
import torch

from models.metrics import masked_psnr_per_frame, mean_rollout_psnr, psnr_per_frame


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


def test_masked_psnr_matches_a_hand_computation():
    truth = torch.zeros(2, 3, 2, 2)
    pred = truth.clone()
    mask = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    mask[0, 0, 0, 0] = 255                      # frame 0: one figure pixel (0/255 masks count as set)
    pred[0, :, 0, 0] = torch.tensor([0.1, 0.2, 0.3])
    pred[0, 1, 1, 1] = 0.4                      # background: 0.16 over 3 pixels x 3 channels
    pred[1] += 0.5                              # frame 1: no figure; background MSE 0.25
    psnr = masked_psnr_per_frame(pred, truth, mask)
    figure_mse = (0.01 + 0.04 + 0.09) / 3
    assert psnr["figure"][0].item() == pytest.approx(10 * math.log10(1 / figure_mse), rel=1e-5)
    assert psnr["background"].tolist() == pytest.approx([10 * math.log10(9 / 0.16), 10 * math.log10(4)], rel=1e-5)
    assert math.isnan(psnr["figure"][1].item())          # empty mask: no figure PSNR
    # 0/1 masks give the same, and the whole-frame PSNR lies between the two regions
    assert torch.equal(masked_psnr_per_frame(pred, truth, (mask > 0).to(torch.uint8))["figure"][:1], psnr["figure"][:1])
    whole = psnr_per_frame(pred, truth)[0]
    assert psnr["background"][0] > whole > psnr["figure"][0]


def test_a_frame_all_figure_has_no_background_psnr():
    truth = torch.rand(1, 3, 4, 4)
    psnr = masked_psnr_per_frame(truth + 0.1, truth, torch.ones(1, 1, 4, 4))
    assert psnr["figure"].item() == pytest.approx(20.0, rel=1e-4) and math.isnan(psnr["background"].item())


def test_mean_can_skip_frames_without_a_value():
    per_frame = torch.tensor([100.0, 20.0, math.nan, 30.0])
    assert mean_rollout_psnr(per_frame, skip_nan=True) == 25.0
    assert math.isnan(mean_rollout_psnr(per_frame))      # the whole-frame headline keeps NaN visible
