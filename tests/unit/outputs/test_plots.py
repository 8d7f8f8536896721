"""Tests for the training plots (harness.plots) and rollout GIFs (harness.media)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.colors
import numpy as np
import pytest
import torch
from PIL import Image

from harness.outputs.gif import (
    FOOTER_PX,
    HEADER_PX,
    HOLD_LEVELS,
    PANEL_GAP_PX,
    frame_durations_ms,
    to_uint8_frames,
    write_rollout_gif,
)
from harness.outputs.plots import (
    DIVERGED_COLOR,
    DPI,
    FIGURE_WIDTH_IN,
    plot_psnr_per_frame,
    plot_schedules,
    plot_training_curves,
)


def make_history(epochs: int) -> list[dict]:
    """A plausible run: cyclical beta, tfr decaying from epoch 10, KL in the thousands, PSNR 15 -> 25 dB."""
    history = []
    for epoch in range(epochs):
        beta = min(1.0, (epoch % 3) / 2)
        recon = 0.02 * math.exp(-epoch / 10) + 0.002
        kl = 3000 * math.exp(-epoch / 8) + 400
        history.append(
            {
                "epoch": epoch,
                "loss": 16 * (recon + beta * kl * 1e-4),
                "recon": recon,
                "kl": kl,
                "beta": beta,
                "tfr": max(0.0, 1.0 - 0.1 * max(0, epoch - 9)),
                "val_psnr": 15 + 10 * (1 - math.exp(-epoch / 8)),
                "lr": 1e-3,
                "seconds": 12.0,
            }
        )
    return history


def diverged_history() -> list[dict]:
    history = make_history(8)
    history[3]["val_psnr"] = float("nan")  # an epoch without validation
    history[-1].update(loss=float("nan"), recon=float("inf"), kl=float("nan"), val_psnr=float("nan"), beta=float("nan"))
    return history


HISTORIES = {"normal": make_history(30), "one_epoch": make_history(1), "diverged": diverged_history()}


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Each plot of each history, drawn once for all the tests below (a figure takes about a second)."""
    folder = tmp_path_factory.mktemp("figures")
    drawn = {}
    for name, history in HISTORIES.items():
        drawn["curves", name] = plot_training_curves(history, folder / f"curves_{name}.png", title=name)
        drawn["schedules", name] = plot_schedules(history, folder / "nested" / f"schedules_{name}.png")
    return drawn


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def pixels_of_color(pixels: np.ndarray, color: str) -> int:
    """How many pixels are (nearly) exactly this matplotlib colour: the cores of lines and markers."""
    rgb = np.rint(np.array(matplotlib.colors.to_rgb(color)) * 255).astype(np.int16)
    return int((np.abs(pixels.astype(np.int16) - rgb).max(axis=-1) <= 2).sum())


def assert_figure(path: Path) -> np.ndarray:
    pixels = read_png(path)
    assert pixels.shape[1] == round(FIGURE_WIDTH_IN * DPI)
    assert pixels.shape[0] >= 400
    assert pixels.std() > 0
    return pixels


@pytest.mark.parametrize("name", HISTORIES)
def test_training_curves_draw_every_metric(figures: dict, name: str) -> None:
    pixels = assert_figure(figures["curves", name])
    for metric_color in ("tab:blue", "tab:orange", "tab:purple", "tab:green"):  # loss, recon, KL, PSNR
        assert pixels_of_color(pixels, metric_color) > 10


def test_training_curves_flag_diverged_epochs_only(figures: dict) -> None:
    assert pixels_of_color(read_png(figures["curves", "diverged"]), DIVERGED_COLOR) > 20
    assert pixels_of_color(read_png(figures["curves", "normal"]), DIVERGED_COLOR) == 0


@pytest.mark.parametrize("name", HISTORIES)
def test_schedules_draw_beta_and_tfr(figures: dict, name: str) -> None:
    pixels = assert_figure(figures["schedules", name])
    assert pixels_of_color(pixels, "tab:purple") > 10  # beta
    assert pixels_of_color(pixels, "tab:blue") > 10  # teacher forcing


def test_empty_history_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        plot_training_curves([], tmp_path / "curves.png")


def test_psnr_per_frame_from_array(tmp_path: Path) -> None:
    psnr = np.concatenate([[np.inf], np.linspace(25, 18, 629)])
    pixels = assert_figure(plot_psnr_per_frame(psnr, tmp_path / "psnr.png", title="sequence 0"))
    assert pixels_of_color(pixels, "tab:blue") > 50


def test_psnr_per_frame_from_dict_draws_each_curve(tmp_path: Path) -> None:
    frames = 16
    curves = {
        "model": np.concatenate([[np.inf], np.linspace(26, 21, frames - 1)]),
        "repeat first frame": torch.cat([torch.tensor([math.inf]), torch.linspace(22, 15, frames - 1)]),
        "untrained": np.concatenate([[np.inf], np.full(frames - 1, 11.0)]),
    }
    pixels = assert_figure(plot_psnr_per_frame(curves, tmp_path / "psnr.png"))
    for default_cycle_color in ("tab:blue", "tab:orange", "tab:green"):
        assert pixels_of_color(pixels, default_cycle_color) > 10


def test_psnr_per_frame_adds_a_figure_panel_with_gaps(tmp_path: Path) -> None:
    frames = 16
    whole = {"model": np.linspace(30, 20, frames), "repeat first frame": np.linspace(30, 15, frames)}
    figure = {"model": np.linspace(25, 12, frames), "repeat first frame": np.full(frames, 9.0)}
    figure["model"][5:8] = np.nan    # the dancer out of frame
    one = assert_figure(plot_psnr_per_frame(whole, tmp_path / "one.png"))
    two = assert_figure(plot_psnr_per_frame(whole, tmp_path / "two.png", figure_psnr=figure))
    assert two.shape[0] > 1.5 * one.shape[0]   # a second panel below
    lower = two[two.shape[0] // 2:]
    for colour in ("tab:blue", "tab:orange"):   # lines, not just their legend entries
        assert pixels_of_color(lower, colour) > 200


def test_psnr_per_frame_keeps_a_curve_visible_under_an_equal_one(tmp_path: Path) -> None:
    """The untrained residual model is exactly "repeat first frame": drawn over it in another line
    style, the first curve still shows between the dashes (before, only its legend entry did)."""
    frames = 300
    baseline = np.concatenate([[np.inf], np.linspace(22, 18, frames - 1)])
    curves = {"model": np.concatenate([[np.inf], np.full(frames - 1, 26.0)]),
              "repeat first frame": baseline, "untrained model": baseline.copy()}
    pixels = assert_figure(plot_psnr_per_frame(curves, tmp_path / "psnr.png"))
    legend_only = assert_figure(plot_psnr_per_frame({"model": curves["model"], "repeat first frame": np.full(
        frames, np.nan)}, tmp_path / "legend.png"))
    assert pixels_of_color(pixels, "tab:orange") > 5 * max(1, pixels_of_color(legend_only, "tab:orange"))
    assert pixels_of_color(pixels, "tab:green") > 100


def test_psnr_per_frame_rejects_2d(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1-D"):
        plot_psnr_per_frame(np.zeros((2, 5)), tmp_path / "psnr.png")


# --- to_uint8_frames ---------------------------------------------------------


def test_to_uint8_from_float_chw_tensor() -> None:
    frames = torch.rand(5, 3, 8, 16)
    converted = to_uint8_frames(frames)
    assert converted.dtype == np.uint8
    assert converted.shape == (5, 8, 16, 3)
    expected = np.rint(frames.permute(0, 2, 3, 1).numpy() * 255)
    np.testing.assert_array_equal(converted, expected)


def test_to_uint8_from_bfloat16_tensor() -> None:
    converted = to_uint8_frames(torch.full((2, 3, 4, 4), 0.5, dtype=torch.bfloat16))
    assert converted.shape == (2, 4, 4, 3)
    assert (converted == 128).all()


def test_to_uint8_from_float_hwc_array() -> None:
    frames = np.random.default_rng(0).random((4, 8, 16, 3))
    converted = to_uint8_frames(frames)
    assert converted.shape == (4, 8, 16, 3)
    np.testing.assert_array_equal(converted, np.rint(frames * 255))


def test_to_uint8_passes_uint8_through() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (3, 8, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8_frames(frames), frames)
    chw = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(to_uint8_frames(chw), frames)


def test_to_uint8_rounds_and_clips() -> None:
    values = np.array([0.5, 1.2, -0.1, 1 / 255, 0.0, 1.0, np.nan], dtype=np.float32)
    frames = np.broadcast_to(values[None, None, :, None], (1, 1, values.size, 3))
    converted = to_uint8_frames(frames)[0, 0, :, 0]
    assert converted.tolist() == [128, 255, 0, 1, 0, 255, 0]


def test_to_uint8_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        to_uint8_frames(np.zeros((3, 8, 16)))
    with pytest.raises(ValueError):
        to_uint8_frames(np.zeros((2, 4, 8, 16)))


# --- write_rollout_gif -------------------------------------------------------

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [240, 240, 240]], np.uint8)


def random_frames(seed: int, frames: int = 12, height: int = 8, width: int = 16) -> np.ndarray:
    """Frames of a few well-separated colours, so the GIF must reproduce them exactly."""
    indices = np.random.default_rng(seed).integers(0, len(PALETTE), (frames, height, width))
    return PALETTE[indices]


def read_gif(path: Path) -> tuple[np.ndarray, list[int], dict]:
    """All frames as composited RGB, their delays in ms, and the first frame's info."""
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        info = dict(gif.info)
        frames, durations = [], []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
            durations.append(gif.info["duration"])
    return np.stack(frames), durations, info


def panel(gif_frames: np.ndarray, index: int, scale: int, height: int, width: int) -> np.ndarray:
    """Panel `index` cut out of the GIF frames and sampled back to 1x (one pixel per scale block)."""
    left = index * (scale * width + PANEL_GAP_PX)
    region = gif_frames[:, HEADER_PX : HEADER_PX + scale * height, left : left + scale * width]
    return region[:, scale // 2 :: scale, scale // 2 :: scale]


def test_gif_with_pose_prediction_and_truth(tmp_path: Path) -> None:
    scale, height, width = 3, 8, 16
    pose, prediction, truth = random_frames(0), random_frames(1), random_frames(2)
    path = write_rollout_gif(tmp_path / "rollout.gif", prediction, truth=truth, pose=pose, fps=15, scale=scale)

    frames, durations, info = read_gif(path)
    assert frames.shape == (12, HEADER_PX + scale * height + FOOTER_PX, 3 * scale * width + 2 * PANEL_GAP_PX, 3)
    assert info["loop"] == 0  # loop forever
    # Panels sit in the order pose | prediction | ground truth and match the input exactly.
    for index, expected in enumerate((pose, prediction, truth)):
        np.testing.assert_array_equal(panel(frames, index, scale, height, width), expected)
    # GIF delays are whole centiseconds: 15 fps alternates 70 and 60 ms around 66.7 ms.
    assert set(durations) <= {60, 70}
    assert sum(durations[:3]) == 200


def test_gif_with_prediction_only(tmp_path: Path) -> None:
    scale, height, width = 2, 8, 16
    prediction = random_frames(3).astype(np.float32) / 255  # float frames, HWC
    path = write_rollout_gif(tmp_path / "prediction.gif", prediction, fps=10, scale=scale)

    frames, durations, info = read_gif(path)
    assert frames.shape == (12, HEADER_PX + scale * height + FOOTER_PX, scale * width, 3)
    assert info["loop"] == 0
    assert durations == [100] * 12
    np.testing.assert_array_equal(panel(frames, 0, scale, height, width), random_frames(3))


def test_gif_upscales_nearest_neighbour(tmp_path: Path) -> None:
    scale = 4
    prediction = random_frames(4, frames=3)
    frames, _, _ = read_gif(write_rollout_gif(tmp_path / "rollout.gif", prediction, scale=scale))
    region = frames[:, HEADER_PX : HEADER_PX + 8 * scale, : 16 * scale]
    np.testing.assert_array_equal(region, prediction.repeat(scale, axis=1).repeat(scale, axis=2))


def test_gif_max_frames_keeps_the_first_frames(tmp_path: Path) -> None:
    chw_prediction = torch.from_numpy(random_frames(5, frames=20)).permute(0, 3, 1, 2)  # uint8 CHW tensor
    truth = random_frames(6, frames=20)
    path = write_rollout_gif(tmp_path / "rollout.gif", chw_prediction, truth=truth, scale=1, max_frames=7)
    frames, durations, _ = read_gif(path)
    assert len(frames) == len(durations) == 7
    np.testing.assert_array_equal(panel(frames, 1, 1, 8, 16), truth[:7])


def test_gif_static_prediction_still_has_one_frame_per_step(tmp_path: Path) -> None:
    # Pillow merges identical consecutive frames; the frame counter must prevent that.
    still = np.zeros((10, 8, 16, 3), np.uint8)
    frames, durations, _ = read_gif(write_rollout_gif(tmp_path / "still.gif", still, fps=25, scale=1))
    assert len(frames) == 10
    assert durations == [40] * 10


def test_gif_slow_change_stays_within_hold_levels(tmp_path: Path) -> None:
    levels = np.arange(60, dtype=np.uint8) + 100  # brightens one level per frame
    fade = np.broadcast_to(levels[:, None, None, None], (60, 8, 16, 3)).copy()
    frames, _, _ = read_gif(write_rollout_gif(tmp_path / "fade.gif", fade, scale=1))
    shown = panel(frames, 0, 1, 8, 16).astype(int)
    error = np.abs(shown - fade.astype(int))
    assert error.max() <= HOLD_LEVELS
    assert shown[-1].min() >= fade[-1].min() - HOLD_LEVELS  # the picture follows the fade


def test_frame_durations_track_the_frame_rate() -> None:
    for fps in (1, 7, 12, 15, 24, 30, 50):
        durations = frame_durations_ms(3 * fps, fps)
        assert all(delay % 10 == 0 and delay > 0 for delay in durations)
        assert sum(durations) == 3000  # three seconds, exactly
        assert max(abs(delay - 1000 / fps) for delay in durations) < 10


def test_gif_rejects_bad_arguments(tmp_path: Path) -> None:
    frames = random_frames(7)
    with pytest.raises(ValueError, match="fps"):
        write_rollout_gif(tmp_path / "a.gif", frames, fps=60)
    with pytest.raises(ValueError, match="same"):
        write_rollout_gif(tmp_path / "b.gif", frames, truth=frames[:5])
    with pytest.raises(ValueError, match="max_frames"):
        write_rollout_gif(tmp_path / "c.gif", frames, max_frames=0)
