"""Tests for models.synth: layout, determinism, split independence, frame content, masks, appearance,
motion, arguments."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.synth import dataset as synth, render as synth_render
from models.synth import generate_dataset, render_video
from models.synth.look import draw_look
from models.synth.motion import dance

SMALL = dict(train_videos=2, val_videos=1, test_videos=2, frames=16, val_frames=20)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by path relative to root."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def video(index: int, n_frames: int = 48, height: int = 32, width: int = 64,
          appearance: str = "default") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return render_video(np.random.default_rng(index), n_frames, height, width, appearance)


def empty_frames(index: int, n_frames: int, height: int, width: int) -> np.ndarray:
    """What video(index) shows without the figure: its background with the figure's shadow, uint8 [n, H, W, 3].

    render_video draws the look first and the motion second from one stream; so does this."""
    rng = np.random.default_rng(index)
    look = draw_look(rng, synth.APPEARANCES["default"])
    joints = dance(rng, n_frames, height, width)
    background = synth_render._background(look, height, width)
    return synth_render._to_uint8(synth_render._floor_with_shadow(joints, look, background))


def test_layout_counts_and_png_format(tmp_path):
    out = tmp_path / "data"
    messages = []
    summary = generate_dataset(out, **SMALL, height=24, width=40, seed=3, progress=messages.append)

    def names(folder: str) -> set[str]:
        return {path.name for path in (out / folder).iterdir()}

    assert names("") == {"train", "val", "test", "synth.json"}
    train_frames = {f"frame{k}.png" for k in range(32)}
    assert names("train/train_img") == names("train/train_label") == names("train/train_mask") == train_frames
    val_frames = {f"frame{k}.png" for k in range(20)}
    assert names("val/val_img") == names("val/val_label") == names("val/val_mask") == val_frames
    assert names("test/test_img") == names("test/test_label") == names("test/test_mask") == {"0", "1"}
    for i in range(2):
        expected = {f"frame{k}.png" for k in range(20)}
        assert names(f"test/test_img/{i}") == names(f"test/test_label/{i}") == names(f"test/test_mask/{i}") == expected

    for path in (out / "train/train_img/frame31.png", out / "val/val_label/frame0.png"):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (40, 24))
    with Image.open(out / "test/test_mask/1/frame7.png") as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", (40, 24))
        assert set(np.unique(np.asarray(image))) == {0, 255}

    recorded = json.loads((out / "synth.json").read_text())
    assert recorded == {"generator": "models.synth", **SMALL, "height": 24, "width": 40, "seed": 3,
                        "appearance": "default"}
    assert summary["parameters"] == {k: v for k, v in recorded.items() if k != "generator"}
    assert summary["frames"] == {"train": 32, "val": 20, "test": 40}
    assert summary["files"] == len(tree_hashes(out)) == 3 * (32 + 20 + 40) + 1
    assert summary["seconds"] > 0
    assert len(messages) == 5  # one per video
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no staging folder left behind


def test_render_video_shapes_and_dtype():
    for height, width in ((16, 32), (32, 64), (64, 128), (48, 48)):
        images, labels, masks = render_video(np.random.default_rng(0), 5, height, width)
        assert images.shape == labels.shape == (5, height, width, 3)
        assert masks.shape == (5, height, width)
        assert images.dtype == labels.dtype == masks.dtype == np.uint8


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    first = tree_hashes(Path(generate_dataset(tmp_path / "a", **SMALL, seed=7)["out"]))
    second = tree_hashes(Path(generate_dataset(tmp_path / "b", **SMALL, seed=7)["out"]))
    other = tree_hashes(Path(generate_dataset(tmp_path / "c", **SMALL, seed=8)["out"]))
    assert first == second
    assert first.keys() == other.keys()
    frames = [name for name in first if name.endswith(".png")]
    assert all(first[name] != other[name] for name in frames)


def test_changing_train_videos_leaves_other_splits_unchanged(tmp_path):
    few = tree_hashes(Path(generate_dataset(tmp_path / "few", **{**SMALL, "train_videos": 1})["out"]))
    many = tree_hashes(Path(generate_dataset(tmp_path / "many", **{**SMALL, "train_videos": 3})["out"]))
    shared = [name for name in few if name.startswith(("val/", "test/", "train/"))]
    # val, test and the first training video (frames 0..15) are the same files in both sets
    assert all(few[name] == many[name] for name in shared)
    assert sum(name.startswith("train/train_img/") for name in many) == 48


def test_label_is_coloured_skeleton_on_black():
    palette = np.rint(synth_render.LABEL_COLOURS * 255).astype(np.uint8)
    for index in range(3):
        _, labels, _ = video(index)
        brightest = labels.max(axis=-1)
        assert (brightest == 0).mean(axis=(1, 2)).min() > 0.8  # mostly exact black, in every frame
        assert (brightest == 255).sum(axis=(1, 2)).min() >= 20  # limbs are bright, saturated colours
        # the same fixed colours in every video: most bones show their exact palette colour somewhere
        present = [(labels.reshape(-1, 3) == colour).all(axis=-1).any() for colour in palette]
        assert sum(present) >= len(palette) - 4


def test_image_has_background_and_differs_from_label():
    for index in range(3):
        images, labels, _ = video(index)
        assert images.max(axis=-1).min() > 0  # no pure black anywhere
        figure = labels.max(axis=-1) > 0
        # the figure wears clothes, not label colours
        assert np.abs(images[figure].astype(int) - labels[figure]).mean() > 30
        # the background is not flat: wall and floor, light and shadow
        background = images[~figure].reshape(-1, 3).astype(float)
        assert background.std(axis=0).max() > 5


def test_appearance_differs_between_videos_but_pose_drawing_does_not():
    looks = []
    for index in range(4):
        images, labels, _ = video(index, n_frames=8)
        figure = labels.max(axis=-1) > 0
        looks.append((images[~figure].mean(axis=0), images[figure].mean(axis=0)))
    for i in range(4):
        for j in range(i):
            background_gap = np.abs(looks[i][0] - looks[j][0]).max()
            figure_gap = np.abs(looks[i][1] - looks[j][1]).max()
            assert max(background_gap, figure_gap) > 10, (i, j)


def test_motion_is_smooth_and_the_figure_moves():
    for index in range(3):
        images, labels, _ = video(index, n_frames=64)
        for frames in (labels.astype(float), images.astype(float)):
            step = np.abs(frames[1:] - frames[:-1]).mean()
            far = np.abs(frames[16:] - frames[:-16]).mean()
            assert 0 < step < 0.35 * far
        # and the figure is in every frame
        assert (labels.max(axis=-1) > 0).sum(axis=(1, 2)).min() > 50


def test_figure_scales_with_frame_height():
    for height, width in ((16, 32), (32, 64), (64, 128)):
        _, labels, _ = render_video(np.random.default_rng(1), 8, height, width)
        for frame in labels:
            rows = np.flatnonzero(frame.max(axis=(1, 2)) > 0)
            assert 0.6 * height <= rows[-1] - rows[0] + 1 <= height


def test_masks_cover_the_pixels_where_the_figure_hides_the_background():
    for index in range(3):
        images, _, masks = video(index, n_frames=12)
        assert set(np.unique(masks)) == {0, synth_render.MASK_ON}
        changed = np.abs(images.astype(int) - empty_frames(index, 12, 32, 64)).max(axis=-1) > 0
        on = masks == synth_render.MASK_ON
        # Every masked pixel shows the figure, not the background (a figure colour may match it by chance).
        assert changed[on].mean() > 0.98
        # Unmasked changed pixels are the anti-aliased rims (coverage < 0.5): a minority of what changed.
        assert 0.6 * changed.sum() < on.sum() <= changed.sum()
        assert on.sum(axis=(1, 2)).min() > 50   # the figure in every frame


def test_masks_leave_the_image_and_label_streams_as_they_were():
    """Statistics of two videos as the generator drew them before masks and appearances existed:
    a change of the RNG stream moves these colours by tens of levels and the figure by pixels."""
    ys, xs = np.mgrid[:16, :32]
    expected = {
        0: ([125.16, 129.03, 145.71], [(15.095, 8.222), (15.333, 8.476), (15.5, 8.227), (15.27, 8.254)]),
        5: ([106.8, 83.88, 102.93], [(16.969, 7.906), (17.758, 7.712), (18.484, 7.734), (19.094, 8.078)]),
    }
    for index, (colour, centres) in expected.items():
        images, labels, _ = video(index, n_frames=24, height=16, width=32)
        assert images.reshape(-1, 3).mean(axis=0) == pytest.approx(colour, abs=0.02)
        skeleton = labels.max(axis=-1) > 0
        measured = [((xs * skeleton[t]).sum() / skeleton[t].sum(), (ys * skeleton[t]).sum() / skeleton[t].sum())
                    for t in (0, 8, 16, 23)]
        assert np.array(measured) == pytest.approx(np.array(centres), abs=0.002)


def saturation(pixels: np.ndarray) -> np.ndarray:
    """HSV saturation of uint8 RGB pixels [..., 3]."""
    top = pixels.max(axis=-1).astype(float)
    return (top - pixels.min(axis=-1)) / np.maximum(top, 1)


def test_shifted_appearance_changes_the_colours_but_not_the_motion():
    for index in range(4):
        default_rng, shifted_rng = np.random.default_rng(index), np.random.default_rng(index)
        images, labels, masks = render_video(default_rng, 16, 32, 64)
        shifted, shifted_labels, shifted_masks = render_video(shifted_rng, 16, 32, 64, "shifted")
        # Same draws in the same order: the same poses and figure outline, and the stream ends in the same state.
        np.testing.assert_array_equal(shifted_labels, labels)
        np.testing.assert_array_equal(shifted_masks, masks)
        assert shifted_rng.bit_generator.state == default_rng.bit_generator.state
        background = masks == 0
        # Darker, more saturated walls and floors than the default ranges ever give.
        assert shifted[background].mean() < 0.7 * images[background].mean()
        assert np.median(saturation(shifted[background])) > np.median(saturation(images[background])) + 0.1
        figure = ~background
        assert np.abs(shifted[figure].astype(int) - images[figure]).mean() > 20


def test_each_appearance_shares_no_colour_range_with_another():
    """A clothes or room colour drawn in one set of ranges cannot be drawn in another: for every pair of
    sets, their (saturation, value) boxes are disjoint in saturation or in value."""
    def disjoint(a, b):
        return a[1] <= b[0] or b[1] <= a[0]
    names = list(synth.APPEARANCES)
    assert {"default", "shifted", "bright"} <= set(names)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            for part in ("shirt", "trousers", "shoes", "wall", "floor"):
                (s1, v1), (s2, v2) = synth.APPEARANCES[first][part], synth.APPEARANCES[second][part]
                assert disjoint(s1, s2) or disjoint(v1, v2), (first, second, part)


def test_bright_appearance_changes_the_colours_but_not_the_motion():
    for index in range(2):
        default_rng, bright_rng = np.random.default_rng(index), np.random.default_rng(index)
        images, labels, masks = render_video(default_rng, 16, 32, 64)
        bright, bright_labels, bright_masks = render_video(bright_rng, 16, 32, 64, "bright")
        np.testing.assert_array_equal(bright_labels, labels)
        np.testing.assert_array_equal(bright_masks, masks)
        background = masks == 0
        assert bright[background].mean() > 1.15 * images[background].mean()     # white walls, pale floors
        assert np.abs(bright[~background].astype(int) - images[~background]).mean() > 20


def test_shifted_data_set_is_recorded_and_shares_labels_and_masks(tmp_path):
    small = {**SMALL, "train_videos": 1, "test_videos": 1}
    default = tree_hashes(Path(generate_dataset(tmp_path / "default", **small)["out"]))
    shifted_root = Path(generate_dataset(tmp_path / "shifted", **small, appearance="shifted")["out"])
    shifted = tree_hashes(shifted_root)
    assert json.loads((shifted_root / "synth.json").read_text())["appearance"] == "shifted"
    assert default.keys() == shifted.keys()
    for name in default:
        if name.endswith(".png"):
            same = default[name] == shifted[name]
            assert same == ("_label" in name or "_mask" in name), name


@pytest.mark.parametrize(
    "argument, value",
    [
        ("train_videos", 0),
        ("val_videos", -1),
        ("test_videos", 1.0),
        ("frames", 0),
        ("val_frames", True),
        ("height", 15),
        ("width", 8),
        ("seed", -1),
        ("appearance", "neon"),
    ],
)
def test_bad_argument_is_named(tmp_path, argument, value):
    with pytest.raises(ValueError, match=f"^{argument} must be"):
        generate_dataset(tmp_path / "data", **{argument: value})
    assert not (tmp_path / "data").exists()


def test_render_video_rejects_bad_sizes():
    for kwargs, name in (({"n_frames": 0}, "n_frames"), ({"n_frames": 2, "height": 10}, "height"),
                         ({"n_frames": 2, "appearance": "Shifted"}, "appearance")):
        with pytest.raises(ValueError, match=f"^{name} must be"):
            render_video(np.random.default_rng(0), **kwargs)


def test_existing_output_is_refused_and_failures_leave_nothing(tmp_path, monkeypatch):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        generate_dataset(out, **SMALL)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    def broken_write(path: Path, pixels: np.ndarray) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(synth, "_write_png", broken_write)
    with pytest.raises(OSError, match="disk full"):
        generate_dataset(tmp_path / "other", **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_concurrent_writer_that_finishes_first_wins(tmp_path, monkeypatch):
    """Two processes generating the same cache: the one renaming second gets FileExistsError
    (which harness.datasets treats as 'use the finished set') and leaves no staging folder."""
    out = tmp_path / "data"
    real_write = synth._write_png

    def write_while_another_process_finishes(path: Path, pixels: np.ndarray) -> None:
        out.mkdir(exist_ok=True)  # from the writer threads: idempotent
        (out / "synth.json").write_text("{}")
        real_write(path, pixels)

    monkeypatch.setattr(synth, "_write_png", write_while_another_process_finishes)
    with pytest.raises(FileExistsError, match="another process"):
        generate_dataset(out, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert [p.name for p in out.iterdir()] == ["synth.json"]
