"""Tests for models.data: ordering, runs, test sequences, masks, cache, and every kind of bad data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import data
from models.data import DataError, load_dance_data, load_test_sequences

H, W = 8, 12  # small frames keep the tests fast; the loader is told this size explicitly
IMG, LABEL = 0, 200  # blue channel tells images from labels


def load_frames(folder: Path, size: tuple[int | None, int | None] | None = None,
                cache_dir: Path | None = None) -> torch.Tensor:
    """One frame folder as load_dance_data reads each of its folders (sorted, decoded, cached); a size of
    None, or a None entry, takes it from the first frame."""
    return data._load_listed(folder, data._list_frames(folder), size or (None, None), cache_dir)


def write_frame(path: Path, index: int, kind: int = IMG, size: tuple[int, int] = (H, W)) -> None:
    """An RGB PNG whose pixels encode `index` (red = low byte, green = high byte) and `kind` (blue)."""
    pixels = np.zeros((*size, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = index % 256, index // 256, kind
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def frame_indices(frames: torch.Tensor) -> list[int]:
    """Decode the index written by write_frame from each frame of [..., 3, H, W]."""
    flat = frames.reshape(-1, 3, frames.shape[-2], frames.shape[-1])
    return [int(f[0, 0, 0]) + 256 * int(f[1, 0, 0]) for f in flat]


def write_mask(path: Path, index: int, size: tuple[int, int] = (H, W)) -> None:
    """A grayscale 0/255 mask PNG whose first row spells `index` in binary (bit k at column k)."""
    pixels = np.zeros(size, dtype=np.uint8)
    pixels[0] = [255 if index >> k & 1 else 0 for k in range(size[1])]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def mask_indices(masks: torch.Tensor) -> list[int]:
    """Decode the index written by write_mask from each mask of [..., 1, H, W] holding 0/1."""
    flat = masks.reshape(-1, masks.shape[-2], masks.shape[-1])
    return [sum(int(m[0, k]) << k for k in range(m.shape[-1])) for m in flat]


def write_masks(root: Path, split: str, count: int) -> None:
    for i in range(count):
        write_mask(root / split / f"{split}_mask" / f"frame{i}.png", i)


def write_split(root: Path, split: str, count: int) -> None:
    for i in range(count):
        write_frame(root / split / f"{split}_img" / f"frame{i}.png", i, IMG)
        write_frame(root / split / f"{split}_label" / f"frame{i}.png", i, LABEL)


def write_test_sequence(root: Path, index: int, count: int, with_truth: bool) -> None:
    for t in range(count):
        write_frame(root / "test" / "test_label" / str(index) / f"frame{t}.png", 1000 * index + t, LABEL)
        if t == 0 or with_truth:
            write_frame(root / "test" / "test_img" / str(index) / f"frame{t}.png", 1000 * index + t, IMG)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A valid data set: 80 train frames (5 runs of 16), 25 val frames, no test split."""
    write_split(tmp_path, "train", 80)
    write_split(tmp_path, "val", 25)
    return tmp_path


def load(root: Path, **kwargs) -> data.DanceData:
    options = dict(height=H, width=W, train_vi_len=16, val_vi_len=6) | kwargs
    return load_dance_data(root, **options)


def data_error(call, *fragments: object) -> str:
    """Run `call`, expect a one-line DataError that mentions every fragment."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in {message!r}"
    return message


# ---------------------------------------------------------------- good data


def test_load_frames_sorts_by_integer_and_ignores_other_files(tmp_path: Path) -> None:
    for i in (10, 2, 0, 1, 33):
        write_frame(tmp_path / f"frame{i}.png", i)
    (tmp_path / ".DS_Store").write_bytes(b"\x00junk")
    (tmp_path / "Thumbs.db").write_bytes(b"junk")
    (tmp_path / "._frame5.png").write_bytes(b"macOS resource fork")
    (tmp_path / "notes.txt").write_text("frame99")
    write_frame(tmp_path / "subfolder" / "frame7.png", 7)

    frames = load_frames(tmp_path, (H, W))

    assert frames.dtype == torch.uint8 and frames.shape == (5, 3, H, W)
    assert frame_indices(frames) == [0, 1, 2, 10, 33]
    assert (frames[:, 2] == IMG).all()


def test_load_dance_data_aligns_images_and_labels(root: Path) -> None:
    dance = load(root)

    assert dance.train_img.shape == dance.train_label.shape == (80, 3, H, W)
    assert dance.val_img.shape == (25, 3, H, W)
    assert frame_indices(dance.train_img) == frame_indices(dance.train_label) == list(range(80))
    assert (dance.train_img[:, 2] == IMG).all() and (dance.train_label[:, 2] == LABEL).all()


def test_train_runs_are_consecutive_non_overlapping_views(tmp_path: Path) -> None:
    write_split(tmp_path, "train", 35)  # 4 runs of 8, 3 leftover frames dropped
    write_split(tmp_path, "val", 6)
    dance = load(tmp_path, train_vi_len=8)

    img, label = dance.train_runs(8)

    assert img.shape == label.shape == (4, 8, 3, H, W)
    for r in range(4):
        assert frame_indices(img[r]) == frame_indices(label[r]) == list(range(8 * r, 8 * r + 8))
    assert img.untyped_storage().data_ptr() == dance.train_img.untyped_storage().data_ptr()


@pytest.mark.parametrize(("partial", "kept"), [(1.0, 10), (0.5, 5), (0.3, 3), (0.25, 3), (0.01, 1)])
def test_train_runs_partial_keeps_first_runs_rounding_up(tmp_path: Path, partial: float, kept: int) -> None:
    write_split(tmp_path, "train", 80)  # 10 runs of 8
    write_split(tmp_path, "val", 6)

    img, label = load(tmp_path, train_vi_len=8).train_runs(8, partial=partial)

    assert img.shape[0] == label.shape[0] == kept
    assert frame_indices(img) == list(range(8 * kept))


@pytest.mark.parametrize("partial", [0.0, -0.5, 1.5])
def test_train_runs_rejects_partial_outside_unit_interval(root: Path, partial: float) -> None:
    with pytest.raises(ValueError, match="partial"):
        load(root).train_runs(16, partial=partial)


def test_val_runs_cut_consecutive_sequences(root: Path) -> None:
    dance = load(root)  # 25 val frames

    img, label, mask = dance.val_runs(6)
    first_two, _, _ = dance.val_runs(6, max_sequences=2)

    assert img.shape == label.shape == (4, 6, 3, H, W)
    assert frame_indices(img) == frame_indices(label) == list(range(24))
    assert torch.equal(first_two, img[:2])
    assert mask is None  # no val_mask folder


# ---------------------------------------------------------------- masks


def test_masks_load_as_zero_one_aligned_with_the_images(root: Path) -> None:
    write_masks(root, "train", 80)
    write_masks(root, "val", 25)
    cache = root / "cache"

    dance = load(root, cache_dir=cache)

    assert dance.train_mask.dtype == torch.uint8 and dance.train_mask.shape == (80, 1, H, W)
    assert set(dance.train_mask.unique().tolist()) == {0, 1}
    assert mask_indices(dance.train_mask) == list(range(80))
    img, _, mask = dance.val_runs(6)
    assert mask.shape == (4, 6, 1, H, W)
    assert mask_indices(mask) == frame_indices(img) == list(range(24))
    assert torch.equal(dance.val_runs(6, max_sequences=2)[2], mask[:2])
    # Masks are cached apart from the images, as [N, 1, H, W].
    assert len(list(cache.glob("*.npy"))) == 6
    assert torch.equal(load(root, cache_dir=cache).val_mask, dance.val_mask)


def test_a_split_without_mask_folder_has_no_masks(root: Path) -> None:
    assert load(root).train_mask is None and load(root).val_mask is None
    write_masks(root, "val", 25)
    dance = load(root)
    assert dance.train_mask is None
    assert mask_indices(dance.val_mask) == list(range(25))


def test_mask_pngs_of_any_mode_are_set_from_128(tmp_path: Path) -> None:
    write_split(tmp_path, "train", 16)
    write_split(tmp_path, "val", 6)
    masks = tmp_path / "val" / "val_mask"
    masks.mkdir(parents=True)
    Image.fromarray(np.full((H, W), 127, dtype=np.uint8)).save(masks / "frame0.png")
    Image.fromarray(np.full((H, W), 128, dtype=np.uint8)).save(masks / "frame1.png")
    Image.fromarray(np.full((H, W, 3), 255, dtype=np.uint8)).save(masks / "frame2.png")
    Image.fromarray(np.full((H, W), 0x8000, dtype=np.uint16)).save(masks / "frame3.png")
    Image.fromarray(np.full((H, W), 0x7FFF, dtype=np.uint16)).save(masks / "frame4.png")
    Image.fromarray(np.ones((H, W), dtype=bool)).save(masks / "frame5.png")  # mode "1"

    assert load(tmp_path).val_mask[:, 0, 0, 0].tolist() == [0, 1, 1, 1, 0, 1]


def test_image_without_mask(root: Path) -> None:
    write_masks(root, "train", 80)
    missing = root / "train" / "train_mask" / "frame7.png"
    missing.unlink()
    message = data_error(lambda: load(root), root / "train" / "train_img" / "frame7.png", missing)
    assert "no mask" in message


def test_mask_without_image(root: Path) -> None:
    write_masks(root, "val", 26)  # one more than the 25 images
    extra = root / "val" / "val_mask" / "frame25.png"
    data_error(lambda: load(root), extra, root / "val" / "val_img" / "frame25.png", "mask has no image")


def test_mask_of_wrong_size(root: Path) -> None:
    write_masks(root, "val", 25)
    bad = root / "val" / "val_mask" / "frame4.png"
    write_mask(bad, 4, size=(H, W + 1))
    data_error(lambda: load(root), bad, f"{H}x{W + 1}", f"{H}x{W}")


def test_test_sequences_load_masks_where_their_folder_exists(tmp_path: Path) -> None:
    write_test_sequence(tmp_path, 0, 5, with_truth=True)
    write_test_sequence(tmp_path, 1, 4, with_truth=True)
    for t in range(5):
        write_mask(tmp_path / "test" / "test_mask" / "0" / f"frame{t}.png", 100 + t)

    with_masks, without = load_test_sequences(tmp_path, height=H, width=W)

    assert with_masks.masks.shape == (5, 1, H, W)
    assert mask_indices(with_masks.masks) == [100, 101, 102, 103, 104]
    assert without.masks is None


def test_test_masks_must_match_their_images(tmp_path: Path) -> None:
    write_test_sequence(tmp_path, 0, 3, with_truth=True)
    mask_dir = tmp_path / "test" / "test_mask" / "0"
    for t in range(2):
        write_mask(mask_dir / f"frame{t}.png", t)
    data_error(lambda: load_test_sequences(tmp_path, height=H, width=W),
               tmp_path / "test" / "test_img" / "0" / "frame2.png", mask_dir / "frame2.png")
    write_mask(tmp_path / "test" / "test_mask" / "3" / "frame0.png", 0)
    data_error(lambda: load_test_sequences(tmp_path, height=H, width=W),
               tmp_path / "test" / "test_mask" / "3", tmp_path / "test" / "test_img" / "3")


def test_size_none_takes_the_first_frames_size(tmp_path: Path) -> None:
    write_split(tmp_path, "train", 16)
    write_split(tmp_path, "val", 6)

    dance = load(tmp_path, height=None, width=None)

    assert dance.train_img.shape[2:] == dance.val_label.shape[2:] == (H, W)


def test_grayscale_rgba_palette_and_16bit_frames_become_rgb(tmp_path: Path) -> None:
    gray = np.full((H, W), 77, dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "frame0.png")
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[...] = (10, 20, 30, 0)  # fully transparent: alpha is dropped, colour kept
    Image.fromarray(rgba).save(tmp_path / "frame1.png")
    rgb = Image.fromarray(np.full((H, W, 3), (40, 50, 60), dtype=np.uint8))
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "frame2.png")
    Image.fromarray(np.full((H, W), 0x1234, dtype=np.uint16)).save(tmp_path / "frame3.png")

    frames = load_frames(tmp_path, (H, W))

    assert frames.shape == (4, 3, H, W)
    assert frames[0, :, 0, 0].tolist() == [77, 77, 77]
    assert frames[1, :, 0, 0].tolist() == [10, 20, 30]
    assert frames[2, :, 0, 0].tolist() == [40, 50, 60]
    assert frames[3, :, 0, 0].tolist() == [0x12, 0x12, 0x12]


def test_test_sequences_sorted_with_and_without_truth(tmp_path: Path) -> None:
    write_test_sequence(tmp_path, 0, 5, with_truth=True)
    write_test_sequence(tmp_path, 2, 4, with_truth=False)
    write_test_sequence(tmp_path, 10, 3, with_truth=True)

    sequences = load_test_sequences(tmp_path, height=H, width=W)

    assert [s.index for s in sequences] == [0, 2, 10]
    first, no_truth, last = sequences
    assert first.first_frame.shape == (3, H, W)
    assert frame_indices(first.first_frame) == [0]
    assert frame_indices(first.labels) == frame_indices(first.truth) == [0, 1, 2, 3, 4]
    assert (first.truth[:, 2] == IMG).all() and (first.labels[:, 2] == LABEL).all()
    assert no_truth.truth is None
    assert frame_indices(no_truth.first_frame) == [2000]
    assert frame_indices(no_truth.labels) == [2000, 2001, 2002, 2003]
    assert frame_indices(last.truth) == [10000, 10001, 10002]


# ---------------------------------------------------------------- cache


def test_cache_hit_returns_same_frames_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, cache = tmp_path / "frames", tmp_path / "cache"
    for i in range(5):
        write_frame(folder / f"frame{i}.png", i)
    decoded = load_frames(folder, (H, W), cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 1

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(data, "_decode_frames", no_decoding)
    assert torch.equal(load_frames(folder, (H, W), cache_dir=cache), decoded)


def test_changed_folder_invalidates_cache(tmp_path: Path) -> None:
    folder, cache = tmp_path / "frames", tmp_path / "cache"
    for i in range(5):
        write_frame(folder / f"frame{i}.png", i)
    load_frames(folder, (H, W), cache_dir=cache)

    changed = folder / "frame3.png"
    write_frame(changed, 99)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # coarse-mtime file systems
    assert frame_indices(load_frames(folder, (H, W), cache_dir=cache)) == [0, 1, 2, 99, 4]

    write_frame(folder / "frame5.png", 5)
    assert frame_indices(load_frames(folder, (H, W), cache_dir=cache)) == [0, 1, 2, 99, 4, 5]


@pytest.mark.parametrize("garbage", [b"", b"not an npy file", b"\x93NUMPY\x01\x00truncated"])
def test_corrupt_cache_file_is_ignored_and_rewritten(tmp_path: Path, garbage: bytes) -> None:
    folder, cache = tmp_path / "frames", tmp_path / "cache"
    for i in range(3):
        write_frame(folder / f"frame{i}.png", i)
    load_frames(folder, (H, W), cache_dir=cache)
    (cache_file,) = cache.glob("*.npy")
    cache_file.write_bytes(garbage)

    assert frame_indices(load_frames(folder, (H, W), cache_dir=cache)) == [0, 1, 2]
    assert np.load(cache_file).shape == (3, 3, H, W)
    assert list(cache.iterdir()) == [cache_file]  # no temp files left behind


def test_cache_from_another_size_still_reports_the_wrong_file(tmp_path: Path) -> None:
    folder, cache = tmp_path / "frames", tmp_path / "cache"
    for i in range(3):
        write_frame(folder / f"frame{i}.png", i)
    load_frames(folder, None, cache_dir=cache)

    data_error(lambda: load_frames(folder, (H + 1, W), cache_dir=cache), folder / "frame0.png", f"{H}x{W}")


# ---------------------------------------------------------------- bad data


def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    data_error(lambda: load(missing), missing)
    data_error(lambda: load_test_sequences(missing), missing)


def test_missing_label_folder(root: Path) -> None:
    folder = root / "train" / "train_label"
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    data_error(lambda: load(root), folder, "does not exist")


def test_folder_without_frame_pngs(tmp_path: Path) -> None:
    tmp_path.joinpath(".DS_Store").write_bytes(b"junk")
    tmp_path.joinpath("readme.txt").write_text("no frames here")
    data_error(lambda: load_frames(tmp_path), tmp_path, "no frame PNGs")


def test_image_without_label(root: Path) -> None:
    (root / "train" / "train_label" / "frame7.png").unlink()
    train = root / "train"
    data_error(lambda: load(root), train / "train_img" / "frame7.png", train / "train_label" / "frame7.png")


def test_label_without_image(root: Path) -> None:
    (root / "val" / "val_img" / "frame3.png").unlink()
    label, expected_image = root / "val" / "val_label" / "frame3.png", root / "val" / "val_img" / "frame3.png"
    data_error(lambda: load(root), label, expected_image)


def test_truncated_png(root: Path) -> None:
    bad = root / "train" / "train_img" / "frame5.png"
    bad.write_bytes(bad.read_bytes()[:-30])
    data_error(lambda: load(root), bad, "not a readable PNG")


def test_text_file_named_png(root: Path) -> None:
    bad = root / "val" / "val_label" / "frame3.png"
    bad.write_text("this is not an image")
    data_error(lambda: load(root), bad, "not a PNG image")


def test_frame_of_wrong_size(root: Path) -> None:
    bad = root / "train" / "train_label" / "frame9.png"
    write_frame(bad, 9, LABEL, size=(H + 2, W))
    message = data_error(lambda: load(root), bad, f"{H + 2}x{W}", f"{H}x{W}")
    assert "--height/--width" in message


def test_frames_of_default_size_are_enforced(root: Path) -> None:
    first = root / "train" / "train_img" / "frame0.png"
    data_error(lambda: load_dance_data(root, val_vi_len=6), first, "32x64", f"{H}x{W}")


def test_mixed_sizes_are_rejected_when_size_comes_from_the_data(root: Path) -> None:
    bad = root / "val" / "val_img" / "frame2.png"
    write_frame(bad, 2, IMG, size=(H, W + 4))
    data_error(lambda: load(root, height=None, width=None), bad, f"{H}x{W + 4}", f"{H}x{W}")


def test_png_name_without_integer(root: Path) -> None:
    bad = root / "train" / "train_img" / "frameX.png"
    write_frame(bad, 0)
    data_error(lambda: load(root), bad, "integer")


def test_two_files_with_the_same_integer(root: Path) -> None:
    write_frame(root / "train" / "train_img" / "frame01.png", 1)
    message = data_error(lambda: load(root), "frame number 1")
    assert "frame01.png" in message and "frame1.png" in message


def test_too_few_train_frames(root: Path) -> None:
    folder = root / "train" / "train_img"
    data_error(lambda: load(root, train_vi_len=100), folder, "80 frames", "train_vi_len=100")


def test_too_few_val_frames(root: Path) -> None:
    data_error(lambda: load(root, val_vi_len=630), root / "val" / "val_img", "25 frames", "val_vi_len=630")


def test_test_images_without_labels(tmp_path: Path) -> None:
    write_test_sequence(tmp_path, 0, 3, with_truth=False)
    write_frame(tmp_path / "test" / "test_img" / "1" / "frame0.png", 1)
    data_error(
        lambda: load_test_sequences(tmp_path, height=H, width=W),
        tmp_path / "test" / "test_img" / "1",
        tmp_path / "test" / "test_label" / "1",
    )


def test_test_labels_without_images(tmp_path: Path) -> None:
    write_test_sequence(tmp_path, 0, 3, with_truth=False)
    write_frame(tmp_path / "test" / "test_label" / "4" / "frame0.png", 4, LABEL)
    data_error(
        lambda: load_test_sequences(tmp_path, height=H, width=W),
        tmp_path / "test" / "test_label" / "4",
        tmp_path / "test" / "test_img" / "4",
    )


def test_test_images_missing_frame0(tmp_path: Path) -> None:
    write_test_sequence(tmp_path, 0, 3, with_truth=True)
    (tmp_path / "test" / "test_img" / "0" / "frame0.png").unlink()
    missing = tmp_path / "test" / "test_img" / "0" / "frame0.png"
    data_error(lambda: load_test_sequences(tmp_path, height=H, width=W), missing)


def test_test_labels_missing_frame0(tmp_path: Path) -> None:
    write_test_sequence(tmp_path, 0, 3, with_truth=False)
    (tmp_path / "test" / "test_label" / "0" / "frame0.png").unlink()
    data_error(
        lambda: load_test_sequences(tmp_path, height=H, width=W),
        tmp_path / "test" / "test_img" / "0" / "frame0.png",
        tmp_path / "test" / "test_label" / "0" / "frame0.png",
    )


def test_missing_test_folder(root: Path) -> None:
    missing = root / "test" / "test_img"
    data_error(lambda: load_test_sequences(root, height=H, width=W), missing, "does not exist")
