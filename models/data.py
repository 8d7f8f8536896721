"""Load the dance-video data set (the original lab's layout) into uint8 tensors.

Layout::

    ROOT/train/train_img/frame0.png ...    ROOT/train/train_label/frame0.png ...
    ROOT/val/val_img/...                   ROOT/val/val_label/...
    ROOT/test/test_img/<i>/frame0.png      ROOT/test/test_label/<i>/frame0.png ...

and, optionally, figure masks beside the images (the synthetic set writes them,
the lab's data has none)::

    ROOT/train/train_mask/frame0.png ...   ROOT/val/val_mask/...   ROOT/test/test_mask/<i>/...

Every folder is decoded once into an in-memory uint8 tensor [N, 3, H, W]
(masks: [N, 1, H, W] holding 1 on the figure and 0 elsewhere); training slices
views out of it and converts batches to float itself.

Policies
--------
* Frame files are ``*.png`` (any case) whose stem holds exactly one integer
  (``frame12.png``); they sort by that integer, so frame2 comes before frame10.
  Other files (``.DS_Store``, ``Thumbs.db``), hidden files such as macOS
  ``._frame0.png`` and sub-folders are ignored.
* Image and label folders must hold the same file names, and so must an
  image folder and its mask folder when that exists. Without a mask folder the
  masks are None (and masked metrics are not computed).
* A mask PNG is read as grayscale (RGB by its luminance, 16-bit by its high
  byte); a pixel >= 128 is on the figure.
* Size is strict: every frame must be exactly height x width. When a
  dimension is None the first frame decoded sets it, and every other folder
  of the same call must then match. Nothing is resized: resize the data or
  pass the matching --height/--width.
* Colour: grayscale and palette PNGs are expanded to RGB, alpha is dropped
  (not composited), 16-bit grayscale keeps its high byte.
* Any problem with the input raises DataError, whose message is one line
  that starts with the offending path.

With ``cache_dir`` each decoded folder is also stored there as a .npy file,
keyed by the folder's absolute path and its frames' names, sizes and mtimes,
so that a changed folder is decoded again. A cache file that cannot be read
is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import DataError

_ONE_INTEGER = re.compile(r"\D*(\d+)\D*")
# Bump when the cached array's meaning changes, so old cache files are not reused.
_CACHE_VERSION = "1"
MASK_THRESHOLD = 128  # a mask pixel at least this bright is on the figure

FrameSize = tuple[int | None, int | None]


# ---------------------------------------------------------------- frame folders


def _list_frames(folder: Path) -> list[Path]:
    """The frame PNGs of `folder`, sorted by the integer in their names."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder does not exist")
    by_index: dict[int, Path] = {}
    for path in folder.iterdir():
        if path.name.startswith(".") or path.suffix.lower() != ".png" or not path.is_file():
            continue
        match = _ONE_INTEGER.fullmatch(path.stem)
        if match is None:
            raise DataError(f"{path}: frame name must hold exactly one integer, like frame12.png")
        index = int(match.group(1))
        if index in by_index:
            raise DataError(f"{path}: same frame number {index} as {by_index[index]}")
        by_index[index] = path
    if not by_index:
        raise DataError(f"{folder}: no frame PNGs (frameN.png) in folder")
    return [by_index[index] for index in sorted(by_index)]


def _check_pairs(img_dir: Path, img_files: list[Path], other_dir: Path, other_files: list[Path],
                 other: str = "label") -> None:
    """Every image has an `other` (label, mask) file of the same name and every such file an image."""
    img_names = {path.name for path in img_files}
    other_names = {path.name for path in other_files}
    for path in img_files:
        if path.name not in other_names:
            raise DataError(f"{path}: image has no {other}, expected {other_dir / path.name}")
    for path in other_files:
        if path.name not in img_names:
            raise DataError(f"{path}: {other} has no image, expected {img_dir / path.name}")


def _mask_files(mask_dir: Path, img_dir: Path, img_files: list[Path]) -> list[Path] | None:
    """The mask PNGs matching `img_files`, or None when there is no mask folder."""
    if not mask_dir.is_dir():
        return None
    mask_files = _list_frames(mask_dir)
    _check_pairs(img_dir, img_files, mask_dir, mask_files, "mask")
    return mask_files


def _rgb(image: Image.Image) -> np.ndarray:
    """uint8 [3, H, W] of an opened PNG."""
    if image.mode.startswith("I"):
        # 16-bit grayscale: PIL's RGB conversion would clip it, keep the high byte instead.
        gray = (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
        return np.broadcast_to(gray, (3, *gray.shape))
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.asarray(rgb).transpose(2, 0, 1)


def _mask(image: Image.Image) -> np.ndarray:
    """uint8 [1, H, W] of an opened mask PNG: 1 on the figure, 0 elsewhere."""
    if image.mode.startswith("I"):
        gray = np.asarray(image, dtype=np.uint32) >> 8
    else:
        gray = np.asarray(image if image.mode == "L" else image.convert("L"))
    return (gray >= MASK_THRESHOLD).astype(np.uint8)[None]


def _decode_png(path: Path, size: FrameSize, mask: bool = False) -> np.ndarray:
    """One frame as uint8 [3, H, W] (a mask as [1, H, W]), checked against `size` (None entries accept any)."""
    try:
        with Image.open(path, formats=["PNG"]) as image:
            width, height = image.size
            expected = (height if size[0] is None else size[0], width if size[1] is None else size[1])
            if (height, width) != expected:
                raise DataError(
                    f"{path}: frame is {height}x{width} (height x width), expected "
                    f"{expected[0]}x{expected[1]}; resize the data or pass matching --height/--width"
                )
            return _mask(image) if mask else _rgb(image)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a PNG image, or its header is corrupt") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: not a readable PNG ({reason})") from None


def _decode_frames(files: list[Path], size: FrameSize, mask: bool = False) -> np.ndarray:
    """Decode `files` into one uint8 [N, 3, H, W] array ([N, 1, H, W] of masks); the first frame fixes
    any None in `size`."""
    first = _decode_png(files[0], size, mask)
    frames = np.empty((len(files), *first.shape), dtype=np.uint8)
    frames[0] = first
    exact_size = first.shape[1:]
    for i, path in enumerate(files[1:], start=1):
        frames[i] = _decode_png(path, exact_size, mask)
    return frames


# ---------------------------------------------------------------- disk cache


def _cache_path(folder: Path, files: list[Path], cache_dir: Path, mask: bool) -> Path:
    digest = hashlib.sha256(f"{_CACHE_VERSION}\n{folder.resolve()}\n{'mask' if mask else 'rgb'}\n".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return cache_dir / f"frames-{digest.hexdigest()[:32]}.npy"


def _read_cache(path: Path, count: int, size: FrameSize, channels: int) -> np.ndarray | None:
    """The cached array if it is readable and fits the request, else None (decode again)."""
    try:
        frames = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[:2] != (count, channels):
        return None
    # A size mismatch is decoded again, so that the error names the offending file.
    if any(want is not None and want != got for want, got in zip(size, frames.shape[2:])):
        return None
    return frames


def _write_cache(path: Path, frames: np.ndarray) -> None:
    """Write atomically; the cache only saves time, so a failure warns and goes on."""
    temp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as temp:
            temp_name = temp.name
            np.save(temp, frames)
        os.replace(temp_name, path)
    except OSError as err:
        warnings.warn(f"could not write frame cache {path}: {err}", stacklevel=3)
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)


def _load_listed(folder: Path, files: list[Path], size: FrameSize, cache_dir: Path | None,
                 mask: bool = False) -> torch.Tensor:
    if cache_dir is None:
        return torch.from_numpy(_decode_frames(files, size, mask))
    cache_file = _cache_path(folder, files, Path(cache_dir), mask)
    frames = _read_cache(cache_file, len(files), size, 1 if mask else 3)
    if frames is None:
        frames = _decode_frames(files, size, mask)
        _write_cache(cache_file, frames)
    return torch.from_numpy(frames)


# ---------------------------------------------------------------- train / val


def _runs(frames: torch.Tensor, vi_len: int, what: str) -> torch.Tensor:
    """Non-overlapping runs of `vi_len` consecutive frames as a view [R, vi_len, C, H, W]."""
    if vi_len < 1:
        raise ValueError(f"vi_len must be at least 1, got {vi_len}")
    count = frames.shape[0] // vi_len
    if count == 0:
        raise ValueError(f"{what} has {frames.shape[0]} frames, fewer than vi_len={vi_len}")
    return frames[: count * vi_len].view(count, vi_len, *frames.shape[1:])


@dataclass
class DanceData:
    """Decoded train and val splits, each uint8 [N, 3, H, W] with images and labels aligned;
    masks uint8 [N, 1, H, W] (1 on the figure) aligned with the images, or None."""

    train_img: torch.Tensor
    train_label: torch.Tensor
    val_img: torch.Tensor
    val_label: torch.Tensor
    train_mask: torch.Tensor | None = None
    val_mask: torch.Tensor | None = None

    def train_runs(self, vi_len: int, partial: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Non-overlapping runs uint8 [R, vi_len, 3, H, W] (views, no copy) of images and labels.

        Keeps the first ceil(partial * runs) runs, at least 1; 0 < partial <= 1.
        """
        if not 0 < partial <= 1:
            raise ValueError(f"partial must be in (0, 1], got {partial}")
        img = _runs(self.train_img, vi_len, "train split")
        # The small tolerance keeps float noise (0.3 * 10 = 3.0000000000000004) from rounding up.
        keep = max(1, math.ceil(partial * img.shape[0] - 1e-9))
        return img[:keep], _runs(self.train_label, vi_len, "train split")[:keep]

    def val_runs(self, vi_len: int, max_sequences: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Validation sequences uint8 [S, vi_len, 3, H, W] of images and labels, and their masks
        [S, vi_len, 1, H, W] (None without masks): consecutive non-overlapping runs, the first
        `max_sequences` of them when given."""
        img = _runs(self.val_img, vi_len, "val split")[:max_sequences]
        label = _runs(self.val_label, vi_len, "val split")[:max_sequences]
        mask = None if self.val_mask is None else _runs(self.val_mask, vi_len, "val split")[:max_sequences]
        return img, label, mask


def _existing_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root folder does not exist")
    return root


def load_dance_data(
    root: str | Path,
    *,
    height: int | None = 32,
    width: int | None = 64,
    train_vi_len: int = 16,
    val_vi_len: int = 630,
    cache_dir: Path | None = None,
) -> DanceData:
    """Load and validate train and val splits (image and label folders, and mask folders where they exist).

    All folders must share one frame size (see the module's size policy).
    """
    root = _existing_root(root)
    # List and cross-check both splits before decoding anything, so layout errors come fast.
    listed: dict[str, tuple[Path, list[Path]]] = {}   # DanceData field -> folder and its frames
    for split, vi_len, option in (("train", train_vi_len, "train_vi_len"), ("val", val_vi_len, "val_vi_len")):
        img_dir, label_dir = root / split / f"{split}_img", root / split / f"{split}_label"
        img_files, label_files = _list_frames(img_dir), _list_frames(label_dir)
        _check_pairs(img_dir, img_files, label_dir, label_files)
        if len(img_files) < vi_len:
            raise DataError(
                f"{img_dir}: {len(img_files)} frames, fewer than {option}={vi_len} needed for one sequence"
            )
        listed[f"{split}_img"], listed[f"{split}_label"] = (img_dir, img_files), (label_dir, label_files)
        mask_dir = root / split / f"{split}_mask"
        mask_files = _mask_files(mask_dir, img_dir, img_files)
        if mask_files is not None:
            listed[f"{split}_mask"] = (mask_dir, mask_files)

    size: FrameSize = (height, width)
    tensors = {}
    for name, (folder, files) in listed.items():
        frames = _load_listed(folder, files, size, cache_dir, mask=name.endswith("_mask"))
        size = (frames.shape[2], frames.shape[3])
        tensors[name] = frames
    return DanceData(**tensors)


# ---------------------------------------------------------------- test


@dataclass
class TestSequence:
    """One test video: condition on `first_frame`, follow `labels`.

    `truth[t]` is ground-truth frame t, aligned with `labels[t]` (so truth[0] is
    the first frame); None when test_img/<i> holds only frame0. `masks` [T, 1, H, W]
    (1 on the figure) are aligned with the frames of test_img/<i>; None without
    test_mask/<i>.
    """

    __test__ = False  # not a pytest test class, despite the name

    index: int
    first_frame: torch.Tensor
    labels: torch.Tensor
    truth: torch.Tensor | None
    masks: torch.Tensor | None = None


def _numbered_subfolders(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder does not exist")
    numbered = {}
    for path in folder.iterdir():
        if path.name.startswith(".") or not path.is_dir():
            continue
        if not path.name.isdigit():
            raise DataError(f"{path}: test sequence folders must be named 0, 1, 2, ...")
        if int(path.name) in numbered:
            raise DataError(f"{path}: same sequence number as {numbered[int(path.name)]}")
        numbered[int(path.name)] = path
    if not numbered:
        raise DataError(f"{folder}: no test sequence folders (0, 1, ...) in folder")
    return numbered


def load_test_sequences(
    root: str | Path,
    *,
    height: int | None = 32,
    width: int | None = 64,
    cache_dir: Path | None = None,
) -> list[TestSequence]:
    """Load every test_img/<i> + test_label/<i> pair (and test_mask/<i> where it exists), sorted by i,
    all frames of one size."""
    test_dir = _existing_root(root) / "test"
    img_root, label_root, mask_root = test_dir / "test_img", test_dir / "test_label", test_dir / "test_mask"
    img_dirs, label_dirs = _numbered_subfolders(img_root), _numbered_subfolders(label_root)
    for index, path in img_dirs.items():
        if index not in label_dirs:
            raise DataError(f"{path}: test images have no labels, expected {label_root / path.name}")
    for index, path in label_dirs.items():
        if index not in img_dirs:
            raise DataError(f"{path}: test labels have no images, expected {img_root / path.name}")
    mask_dirs = _numbered_subfolders(mask_root) if mask_root.is_dir() else {}
    for index, path in mask_dirs.items():
        if index not in img_dirs:
            raise DataError(f"{path}: test masks have no images, expected {img_root / path.name}")

    size: FrameSize = (height, width)
    sequences = []
    for index in sorted(img_dirs):
        img_dir, label_dir = img_dirs[index], label_dirs[index]
        img_files, label_files = _list_frames(img_dir), _list_frames(label_dir)
        if img_files[0].name != "frame0.png":
            raise DataError(f"{img_dir / 'frame0.png'}: missing, the first frame to condition on")
        # labels[t] must be the pose of frame t, and ground truth is scored against it frame by frame.
        _check_pairs(img_dir, img_files, label_dir, label_files if len(img_files) > 1 else label_files[:1])
        truth = None
        if len(img_files) > 1:
            truth = _load_listed(img_dir, img_files, size, cache_dir)
            first_frame = truth[0]
        else:
            first_frame = _load_listed(img_dir, img_files, size, cache_dir)[0]
        size = tuple(first_frame.shape[1:])
        labels = _load_listed(label_dir, label_files, size, cache_dir)
        masks = None
        if index in mask_dirs:
            mask_files = _mask_files(mask_dirs[index], img_dir, img_files)
            masks = _load_listed(mask_dirs[index], mask_files, size, cache_dir, mask=True)
        sequences.append(TestSequence(index, first_frame, labels, truth, masks))
    return sequences


def to_unit(frames: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 frames -> float32 in [0, 1] on `device`."""
    return frames.to(device, non_blocking=True).float().div_(255.0)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Float frames in [0, 1] -> uint8 as round(255 x), the storage and submission format."""
    return frames.mul(255).round().to(torch.uint8)
