"""The synthetic dance-data generator: the named appearances, one video, and a data set in the lab layout.

A 2D articulated figure (head, torso, arms, legs; models.synth.motion) dances
with smooth motion that differs per video; each frame is drawn as an image, a
label (the coloured skeleton) and a mask of the figure (models.synth.render),
in a look drawn per video (models.synth.look) from one set of APPEARANCES.

Appearance ranges
-----------------
Each video's look is drawn from one of three sets of ranges (APPEARANCES).
Colours are HSV with a uniform random hue; the table gives (saturation,
value). Skin and hair come from the same palettes in every set.

==========  ==========================  ==========================  ==========================
            ``default``                 ``shifted``                 ``bright``
==========  ==========================  ==========================  ==========================
shirt       (0.3, 0.9), (0.45, 0.95)    (0.0, 0.25), (0.7, 1.0)     (0.4, 0.9), (0.1, 0.4)
trousers    (0.2, 0.7), (0.2, 0.7)      (0.75, 1.0), (0.75, 0.95)   (0.0, 0.15), (0.75, 1.0)
shoes       (0.0, 0.5), (0.1, 0.35)     (0.6, 1.0), (0.5, 0.8)      (0.0, 0.3), (0.7, 1.0)
wall        (0.1, 0.45), (0.5, 0.9)     (0.5, 0.9), (0.2, 0.45)     (0.0, 0.08), (0.9, 1.0)
floor       (0.1, 0.5), (0.3, 0.7)      (0.55, 0.95), (0.12, 0.28)  (0.5, 0.8), (0.72, 0.9)
ambient     0.25 .. 0.45                0.55 .. 0.75                0.45 .. 0.55
shadow      0.3 .. 0.55                 0.65 .. 0.85                0.1 .. 0.28
==========  ==========================  ==========================  ==========================

``shifted`` (darker, more saturated rooms; pale shirts over vivid trousers;
flatter light and deeper shadows) and ``bright`` (near-white walls over
saturated pale floors; dark shirts over pale trousers; faint shadows) share
no range of clothes or room with ``default``, nor with each other: data sets
no tuning on the default set has seen. ``shifted`` was looked at while the
CPU recipe was chosen; ``bright`` is kept as a judge that no choice looked
at. All make the same random draws in the same order, so a seed gives the
same motion, labels and masks in each; only the colours differ.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image

from ..errors import OutputExists
from .look import draw_look
from .motion import dance
from .render import paint_video

# The smallest value of each integer argument of generate_dataset (frames below 16 pixels have no figure).
MINIMUMS = {"train_videos": 1, "val_videos": 1, "test_videos": 1, "frames": 1, "val_frames": 1, "height": 16,
            "width": 16, "seed": 0}
SPLIT_KEYS = {"train": 0, "val": 1, "test": 2}  # spawn keys: one RNG stream per split and video

# Ranges of the per-video look (see the module docstring): (saturation, value) of a colour, or (low, high).
APPEARANCES = {
    "default": {
        "shirt": ((0.3, 0.9), (0.45, 0.95)), "trousers": ((0.2, 0.7), (0.2, 0.7)),
        "shoes": ((0.0, 0.5), (0.1, 0.35)), "wall": ((0.1, 0.45), (0.5, 0.9)), "floor": ((0.1, 0.5), (0.3, 0.7)),
        "ambient": (0.25, 0.45), "shadow": (0.3, 0.55),
    },
    "shifted": {
        "shirt": ((0.0, 0.25), (0.7, 1.0)), "trousers": ((0.75, 1.0), (0.75, 0.95)),
        "shoes": ((0.6, 1.0), (0.5, 0.8)), "wall": ((0.5, 0.9), (0.2, 0.45)), "floor": ((0.55, 0.95), (0.12, 0.28)),
        "ambient": (0.55, 0.75), "shadow": (0.65, 0.85),
    },
    "bright": {
        "shirt": ((0.4, 0.9), (0.1, 0.4)), "trousers": ((0.0, 0.15), (0.75, 1.0)),
        "shoes": ((0.0, 0.3), (0.7, 1.0)), "wall": ((0.0, 0.08), (0.9, 1.0)), "floor": ((0.5, 0.8), (0.72, 0.9)),
        "ambient": (0.45, 0.55), "shadow": (0.1, 0.28),
    },
}


class _Video(NamedTuple):
    split: str
    index: int  # within the split
    n_frames: int
    image_dir: str  # relative to the data set root
    label_dir: str
    mask_dir: str
    first: int  # number of the video's first frame in its folders


def render_video(
    rng: np.random.Generator, n_frames: int, height: int = 32, width: int = 64, appearance: str = "default"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic dance video: (image frames, label frames) uint8 [n_frames, height, width, 3],
    and the figure's masks uint8 [n_frames, height, width] (synth_render.MASK_ON on the figure, else 0).

    `appearance` names the ranges of APPEARANCES the video's look is drawn from."""
    _check_int("n_frames", n_frames, 1)
    _check_int("height", height, 16)
    _check_int("width", width, 16)
    _check_appearance(appearance)
    look = draw_look(rng, APPEARANCES[appearance])
    joints = dance(rng, n_frames, height, width)
    return paint_video(joints, look, height, width)


def generate_dataset(
    out: str | Path,
    *,
    train_videos: int = 24,
    val_videos: int = 2,
    test_videos: int = 2,
    frames: int = 160,
    val_frames: int = 630,
    height: int = 32,
    width: int = 64,
    seed: int = 0,
    appearance: str = "default",
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Write the data set in the lab layout under `out`; return a summary dict (counts, seconds, parameters).

    Beside each image folder goes a mask folder of the same frame names (train/train_mask, val/val_mask,
    test/test_mask/<i>). `out` must not exist or be an empty folder. The set is written into a temporary
    sibling folder renamed into place at the end, so `out` never holds a partial set. Video i of a split
    is drawn from the RNG stream (seed, split, i): changing one split's size leaves the other splits'
    files unchanged, and the same arguments give byte-identical files. `appearance` (a key of
    APPEARANCES) changes the colours only.
    """
    parameters = dict(
        train_videos=train_videos, val_videos=val_videos, test_videos=test_videos,
        frames=frames, val_frames=val_frames, height=height, width=width, seed=seed, appearance=appearance,
    )
    for name, minimum in MINIMUMS.items():
        _check_int(name, parameters[name], minimum)
    _check_appearance(appearance)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExists(f"{out} already exists and is not an empty folder")
    videos = _video_plan(parameters)
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the data set is not
        render_seconds = _write_videos(videos, staging, parameters, progress)
        record = json.dumps({"generator": "models.synth", **parameters}, indent=2)
        (staging / "synth.json").write_text(record + "\n")
        try:
            os.replace(staging, out)  # atomic; replaces `out` only if it is an empty folder
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY):  # a concurrent writer renamed its set first
                raise OutputExists(f"{out} was written by another process meanwhile") from err
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "out": str(out),
        "frames": {split: sum(v.n_frames for v in videos if v.split == split) for split in SPLIT_KEYS},
        "files": 3 * sum(video.n_frames for video in videos) + 1,  # image, label and mask per frame
        "seconds": round(time.perf_counter() - started, 3),
        "render_seconds": round(render_seconds, 3),  # summed over videos, which render in parallel
        "parameters": parameters,
    }


def _video_plan(parameters: dict) -> list[_Video]:
    """Every video of the set, with the folders and first frame number its frames go to."""
    videos = []
    for split, length in (("train", parameters["frames"]), ("val", parameters["val_frames"]),
                          ("test", parameters["val_frames"])):
        for i in range(parameters[f"{split}_videos"]):
            if split == "test":  # a folder per video, numbered from frame0
                folders = tuple(f"test/test_{kind}/{i}" for kind in ("img", "label", "mask"))
                videos.append(_Video(split, i, length, *folders, 0))
            else:  # the split's videos one after another in one folder
                folders = tuple(f"{split}/{split}_{kind}" for kind in ("img", "label", "mask"))
                videos.append(_Video(split, i, length, *folders, i * length))
    return videos


def _write_videos(videos: list[_Video], staging: Path, parameters: dict,
                  progress: Callable[[str], None] | None) -> float:
    """Render and write every video into `staging`; returns the seconds spent rendering, over all videos."""
    height, width, seed, appearance = (parameters[k] for k in ("height", "width", "seed", "appearance"))

    def make_video(video: _Video) -> float:
        t0 = time.perf_counter()
        stream = np.random.SeedSequence(seed, spawn_key=(SPLIT_KEYS[video.split], video.index))
        images, labels, masks = render_video(np.random.default_rng(stream), video.n_frames, height, width, appearance)
        rendering = time.perf_counter() - t0
        for folder, pictures in ((video.image_dir, images), (video.label_dir, labels), (video.mask_dir, masks)):
            for k, pixels in enumerate(pictures):
                _write_png(staging / folder / f"frame{video.first + k}.png", pixels)
        return rendering

    for folder in {folder for video in videos for folder in (video.image_dir, video.label_dir, video.mask_dir)}:
        (staging / folder).mkdir(parents=True)
    render_seconds = 0.0
    # numpy, zlib and file writes release the GIL: threads keep every core busy.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        try:
            for video, seconds in zip(videos, pool.map(make_video, videos)):
                render_seconds += seconds
                if progress is not None:
                    progress(f"synth: {video.split} video {video.index + 1}/{parameters[f'{video.split}_videos']} "
                             "written")
        except BaseException:
            pool.shutdown(cancel_futures=True)  # do not finish the queued videos
            raise
    return render_seconds


def _check_int(name: str, value: object, minimum: int) -> None:
    """ValueError naming the argument unless it is an int (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_appearance(appearance: object) -> None:
    if appearance not in APPEARANCES:
        raise ValueError(f"appearance must be one of {', '.join(APPEARANCES)}, got {appearance!r}")


def _write_png(path: Path, pixels: np.ndarray) -> None:
    # Level 1: files about 30% larger than at the default level 6, written about twice as fast.
    Image.fromarray(pixels).save(path, format="PNG", compress_level=1)
