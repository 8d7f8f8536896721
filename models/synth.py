"""Synthetic dance videos written in the layout of the original lab data.

A 2D articulated figure (head, torso, arms, legs) dances with smooth motion
that differs per video: every joint angle is a random mixture of sinusoids at
a per-video tempo, plus sway, travel and bounce of the whole body. Each frame
is drawn twice:

* the label: the skeleton as coloured limbs on black, the same colours in
  every video (like an OpenPose rendering);
* the image: the same pose with per-video skin, hair and clothing colours,
  a wall-and-floor background, a light direction that shades every body part
  as a rounded solid, and a soft shadow on the floor cast away from the light.

A third file per frame, the mask, is 255 where the figure covers at least
half of the pixel and 0 elsewhere (grayscale), so that metrics can score the
figure and the background apart.

Body parts are capsules (round-ended segments, optionally tapered). Each one
is evaluated only in a small window around it, batched over frames, on a
canvas supersampled SUPERSAMPLE times and box-filtered down for
anti-aliasing; there are no per-pixel Python loops.

Appearance ranges
-----------------
Each video's look is drawn from one of two sets of ranges (APPEARANCES).
Colours are HSV with a uniform random hue; the table gives (saturation,
value). Skin and hair come from the same palettes in both sets.

==========  ==========================  ==========================
            ``default``                 ``shifted``
==========  ==========================  ==========================
shirt       (0.3, 0.9), (0.45, 0.95)    (0.0, 0.25), (0.7, 1.0)
trousers    (0.2, 0.7), (0.2, 0.7)      (0.75, 1.0), (0.75, 0.95)
shoes       (0.0, 0.5), (0.1, 0.35)     (0.6, 1.0), (0.5, 0.8)
wall        (0.1, 0.45), (0.5, 0.9)     (0.5, 0.9), (0.2, 0.45)
floor       (0.1, 0.5), (0.3, 0.7)      (0.55, 0.95), (0.12, 0.28)
ambient     0.25 .. 0.45                0.55 .. 0.75
shadow      0.3 .. 0.55                 0.65 .. 0.85
==========  ==========================  ==========================

``shifted`` (darker, more saturated rooms; pale shirts over vivid trousers;
flatter light and deeper shadows) shares no range with ``default``: a data
set no tuning on the default set has seen. Both make the same random draws
in the same order, so a seed gives the same motion, labels and masks in
either; only the colours differ.
"""

from __future__ import annotations

import colorsys
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

from .errors import OutputExists

SUPERSAMPLE = 2  # canvas pixels per output pixel along each axis
CHUNK_CANVAS_PIXELS = 1 << 19  # canvas pixels rendered at once; bounds memory for any frame size
FIGURE_HEIGHT = 0.74  # standing figure (sole to crown) as a fraction of the frame height
GROUND = 0.93  # feet line as a fraction of the frame height
SPLIT_KEYS = {"train": 0, "val": 1, "test": 2}  # spawn keys: one RNG stream per split and video

# Joints. "_l" is the figure's side on the image's left, "_r" on its right.
JOINTS = (
    "pelvis", "neck", "head", "crown",
    "shoulder_l", "elbow_l", "wrist_l", "hand_l",
    "shoulder_r", "elbow_r", "wrist_r", "hand_r",
    "hip_l", "knee_l", "ankle_l", "toe_l",
    "hip_r", "knee_r", "ankle_r", "toe_r",
)
J = {name: i for i, name in enumerate(JOINTS)}

# Body proportions in units of the standing figure height (sole to crown = 1).
NECK_TO_HEAD = 0.125
TORSO = 0.28
SHOULDER_HALF = 0.10
HIP_HALF = 0.06
UPPER_ARM, FOREARM, HAND = 0.17, 0.15, 0.05
THIGH, SHIN, FOOT = 0.25, 0.23, 0.07
HEAD_RADIUS = 0.085
SOLE_BELOW_ANKLE = 0.04  # shoe radius below the ankle/toe line
FOOT_ANGLE = 1.25  # radians from straight down: feet point outwards and a little down

# Joint-angle ranges (radians); the dance keeps every angle inside them.
# Limb angles are measured from straight down, positive = outwards.
ANGLE_RANGES = {
    "lean": (-0.2, 0.2),  # torso, about the pelvis
    "tilt": (-0.25, 0.25),  # head, relative to the torso
    "arm": (-0.1, 2.8),  # upper arm abduction (2.8 = nearly straight up)
    "elbow": (-0.6, 2.3),  # forearm bend: positive further outwards/upwards, negative inwards
    "leg": (-0.05, 0.45),  # leg abduction: where the foot goes
    "knee": (0.0, 0.55),  # knee bend: the knee goes out, the shin comes back (a plie)
}

# Image parts in painting order: (joint a, joint b, radius at a, radius at b, material).
# "sleeve" is the shirt or the skin, per video; a == b draws a disc.
BODY_PARTS = (
    *[(f"hip_{s}", f"knee_{s}", 0.062, 0.050, "trousers") for s in "lr"],
    *[(f"knee_{s}", f"ankle_{s}", 0.050, 0.040, "trousers") for s in "lr"],
    *[(f"ankle_{s}", f"toe_{s}", 0.040, 0.036, "shoes") for s in "lr"],
    ("hip_l", "hip_r", 0.065, 0.065, "trousers"),
    ("neck", "pelvis", 0.078, 0.068, "shirt"),
    ("shoulder_l", "shoulder_r", 0.055, 0.055, "shirt"),
    ("neck", "head", 0.032, 0.032, "skin"),
    ("crown", "crown", 0.082, 0.082, "hair"),
    ("head", "head", HEAD_RADIUS, HEAD_RADIUS, "skin"),
    *[
        part
        for s in "lr"
        for part in (
            (f"shoulder_{s}", f"elbow_{s}", 0.046, 0.040, "shirt"),
            (f"elbow_{s}", f"wrist_{s}", 0.038, 0.032, "sleeve"),
            (f"wrist_{s}", f"hand_{s}", 0.034, 0.036, "skin"),
        )
    ],
)

# Label bones in painting order: (joint a, joint b); colours are fixed hues around the wheel.
LABEL_BONES = (
    ("hip_l", "knee_l"), ("knee_l", "ankle_l"), ("ankle_l", "toe_l"),
    ("hip_r", "knee_r"), ("knee_r", "ankle_r"), ("ankle_r", "toe_r"),
    ("pelvis", "hip_l"), ("pelvis", "hip_r"), ("neck", "pelvis"),
    ("neck", "shoulder_l"), ("shoulder_l", "elbow_l"), ("elbow_l", "wrist_l"),
    ("neck", "shoulder_r"), ("shoulder_r", "elbow_r"), ("elbow_r", "wrist_r"),
    ("neck", "head"), ("head", "head"),
)
LABEL_RADIUS = 0.045
LABEL_HEAD_RADIUS = 0.06
LABEL_COLOURS = np.array(
    [colorsys.hsv_to_rgb(k / (len(LABEL_BONES) - 1), 1.0, 1.0) for k in range(len(LABEL_BONES) - 1)]
    + [(1.0, 1.0, 1.0)],  # the head
    dtype=np.float32,
)


def _segment_radii() -> dict[tuple[str, str], float]:
    """The largest radius drawn around each segment, by the image or the label."""
    radii = {(a, b): LABEL_HEAD_RADIUS if a == b else LABEL_RADIUS for a, b in LABEL_BONES}
    for a, b, radius_a, radius_b, _ in BODY_PARTS:
        radii[a, b] = max(radii.get((a, b), 0.0), radius_a, radius_b)
    return radii


SEGMENT_RADIUS = _segment_radii()


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
}
MASK_ON = 255  # mask value where the figure covers at least half of the pixel

# Skin and hair colours are drawn along these light-to-dark palettes.
SKIN_TONES = np.array([[0.98, 0.84, 0.72], [0.86, 0.64, 0.48], [0.62, 0.42, 0.28], [0.36, 0.23, 0.15]])
HAIR_TONES = np.array([[0.08, 0.06, 0.05], [0.30, 0.18, 0.09], [0.62, 0.40, 0.18], [0.90, 0.78, 0.50]])


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
    and the figure's masks uint8 [n_frames, height, width] (MASK_ON on the figure, else 0).

    `appearance` names the ranges of APPEARANCES the video's look is drawn from."""
    _check_int("n_frames", n_frames, 1)
    _check_int("height", height, 16)
    _check_int("width", width, 16)
    _check_appearance(appearance)
    look = _appearance(rng, APPEARANCES[appearance])
    joints = _dance(rng, n_frames, height, width)
    background = _background(look, height, width)
    images = np.empty((n_frames, height, width, 3), np.uint8)
    labels = np.empty_like(images)
    masks = np.empty((n_frames, height, width), np.uint8)
    chunk = max(1, CHUNK_CANVAS_PIXELS // (height * width * SUPERSAMPLE**2))
    for start in range(0, n_frames, chunk):
        frames = slice(start, start + chunk)
        images[frames], labels[frames], masks[frames] = _paint(joints[frames], look, background)
    return images, labels, masks


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

    Beside each image folder goes a mask folder of the same frame names
    (train/train_mask, val/val_mask, test/test_mask/<i>). `out` must not exist
    or be an empty folder. The set is written into a temporary sibling folder
    that is renamed into place at the end, so `out` never holds a partial set.
    Video i of a split is drawn from the RNG stream (seed, split, i): changing
    one split's size leaves the other splits' files unchanged, and the same
    arguments give byte-identical files. `appearance` (a key of APPEARANCES)
    changes the colours only.
    """
    for name, value, minimum in (
        ("train_videos", train_videos, 1), ("val_videos", val_videos, 1), ("test_videos", test_videos, 1),
        ("frames", frames, 1), ("val_frames", val_frames, 1),
        ("height", height, 16), ("width", width, 16), ("seed", seed, 0),
    ):
        _check_int(name, value, minimum)
    _check_appearance(appearance)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExists(f"{out} already exists and is not an empty folder")
    parameters = dict(
        train_videos=train_videos, val_videos=val_videos, test_videos=test_videos,
        frames=frames, val_frames=val_frames, height=height, width=width, seed=seed, appearance=appearance,
    )
    videos = []
    for split, count, length in (("train", train_videos, frames), ("val", val_videos, val_frames),
                                 ("test", test_videos, val_frames)):
        for i in range(count):
            if split == "test":  # a folder per video, numbered from frame0
                folders = tuple(f"test/test_{kind}/{i}" for kind in ("img", "label", "mask"))
                videos.append(_Video(split, i, length, *folders, 0))
            else:  # the split's videos one after another in one folder
                folders = tuple(f"{split}/{split}_{kind}" for kind in ("img", "label", "mask"))
                videos.append(_Video(split, i, length, *folders, i * length))

    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))

    def make_video(video: _Video) -> float:
        """Render one video and write its frames; returns the seconds spent rendering."""
        t0 = time.perf_counter()
        stream = np.random.SeedSequence(seed, spawn_key=(SPLIT_KEYS[video.split], video.index))
        rng = np.random.default_rng(stream)
        images, labels, masks = render_video(rng, video.n_frames, height, width, appearance)
        rendering = time.perf_counter() - t0
        for folder, pictures in ((video.image_dir, images), (video.label_dir, labels), (video.mask_dir, masks)):
            for k, pixels in enumerate(pictures):
                _write_png(staging / folder / f"frame{video.first + k}.png", pixels)
        return rendering

    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the data set is not
        for folder in {folder for video in videos for folder in (video.image_dir, video.label_dir, video.mask_dir)}:
            (staging / folder).mkdir(parents=True)
        render_seconds = 0.0
        # numpy, zlib and file writes release the GIL: threads keep every core busy.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            try:
                for video, seconds in zip(videos, pool.map(make_video, videos)):
                    render_seconds += seconds
                    if progress is not None:
                        total = parameters[f"{video.split}_videos"]
                        progress(f"synth: {video.split} video {video.index + 1}/{total} written")
            except BaseException:
                pool.shutdown(cancel_futures=True)  # do not finish the queued videos
                raise
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
    seconds = time.perf_counter() - started
    return {
        "out": str(out),
        "frames": {split: sum(v.n_frames for v in videos if v.split == split) for split in SPLIT_KEYS},
        "files": 3 * sum(video.n_frames for video in videos) + 1,  # image, label and mask per frame
        "seconds": round(seconds, 3),
        "render_seconds": round(render_seconds, 3),  # summed over videos, which render in parallel
        "parameters": parameters,
    }


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


# ---------------------------------------------------------------------------------------------
# Motion


def _dance(rng: np.random.Generator, n_frames: int, height: int, width: int) -> np.ndarray:
    """Joint positions [n_frames, len(JOINTS), 2] as (x, y) in output pixels, y down."""
    t = np.arange(n_frames, dtype=np.float64)
    period = rng.uniform(24, 56)  # frames per movement cycle: the video's tempo
    # A slow phrase, the cycle and a quick accent; the accent gets less weight so motion stays smooth.
    freqs = np.array([0.5, 1.0, 2.0]) / period
    accent_weight = np.array([1.0, 1.0, 0.35])

    def wave_params(lo: float, hi: float) -> tuple[float, np.ndarray, np.ndarray]:
        centre = rng.uniform(lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo))
        room = min(centre - lo, hi - centre) * rng.uniform(0.5, 1.0)
        weights = rng.dirichlet(np.ones(3)) * accent_weight
        return centre, room * weights / weights.sum(), rng.uniform(0, 2 * np.pi, 3)

    def wave(params: tuple[float, np.ndarray, np.ndarray], phase_shift: float = 0.0) -> np.ndarray:
        centre, amps, phases = params
        return centre + amps @ np.sin(2 * np.pi * freqs[:, None] * t + (phases + phase_shift)[:, None])

    def left_right(channel: str) -> tuple[np.ndarray, np.ndarray]:
        """The channel on both sides: mirrored, in counter-phase, or independent (per video)."""
        left = wave_params(*ANGLE_RANGES[channel])
        coupling = rng.integers(3)
        if coupling == 2:
            return wave(left), wave(wave_params(*ANGLE_RANGES[channel]))
        return wave(left), wave(left, np.pi * coupling)

    lean, tilt = wave(wave_params(*ANGLE_RANGES["lean"])), wave(wave_params(*ANGLE_RANGES["tilt"]))
    arm, elbow = left_right("arm"), left_right("elbow")
    leg, knee = left_right("leg"), left_right("knee")

    figure = FIGURE_HEIGHT * height
    joints = np.zeros((n_frames, len(JOINTS), 2))
    up = np.stack([-np.sin(lean), -np.cos(lean)], -1)
    right = np.stack([np.cos(lean), -np.sin(lean)], -1)

    def direction(angle: np.ndarray) -> np.ndarray:
        """Unit vectors at `angle` from straight down (positive towards +x)."""
        return np.stack([np.sin(angle), np.cos(angle)], -1)

    def put(name: str, position: np.ndarray) -> np.ndarray:
        joints[:, J[name]] = position
        return position

    pelvis = put("pelvis", np.zeros((n_frames, 2)))
    neck = put("neck", pelvis + TORSO * figure * up)
    head_up = -direction(lean + tilt)
    head = put("head", neck + NECK_TO_HEAD * figure * head_up)
    put("crown", head + 0.35 * HEAD_RADIUS * figure * head_up)
    for k, side in enumerate("lr"):
        sign = -1.0 if side == "l" else 1.0  # outwards in x
        # Arms hang from the shoulders relative to the torso; legs hang from the hips in world angles.
        shoulder = put(f"shoulder_{side}", neck + sign * SHOULDER_HALF * figure * right)
        upper = lean + sign * arm[k]  # direction(lean) points down the torso
        elbow_pos = put(f"elbow_{side}", shoulder + UPPER_ARM * figure * direction(upper))
        fore = upper + sign * elbow[k]
        wrist = put(f"wrist_{side}", elbow_pos + FOREARM * figure * direction(fore))
        put(f"hand_{side}", wrist + HAND * figure * direction(fore))
        hip = put(f"hip_{side}", pelvis + sign * HIP_HALF * figure * right)
        knee_pos = put(f"knee_{side}", hip + THIGH * figure * direction(sign * (leg[k] + knee[k])))
        ankle = put(f"ankle_{side}", knee_pos + SHIN * figure * direction(sign * (leg[k] - 0.7 * knee[k])))
        put(f"toe_{side}", ankle + FOOT * figure * direction(np.full(n_frames, sign * FOOT_ANGLE)))

    # Root: the lowest foot rests on the floor, lifted by a bounce; the body sways and travels.
    feet = joints[:, [J["ankle_l"], J["toe_l"], J["ankle_r"], J["toe_r"]], 1].max(1)
    bounce_height = rng.uniform(0.0, 0.05) * figure
    bounce = bounce_height * (0.5 - 0.5 * np.cos(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)))
    root_y = GROUND * height - SOLE_BELOW_ANKLE * figure - feet - bounce
    room = max(0.0, width / 2 - 0.55 * figure)  # how far the pelvis may go before arms leave the frame
    sway = rng.uniform(0.0, 0.08) * figure * np.sin(2 * np.pi * freqs[0] * t + rng.uniform(0, 2 * np.pi))
    travel_period = rng.uniform(4, 10) * period
    travel = rng.uniform(0.2, 0.7) * room * np.sin(2 * np.pi * t / travel_period + rng.uniform(0, 2 * np.pi))
    root_x = width / 2 + np.clip(travel + sway, -room, room)
    joints += np.stack([root_x, root_y], -1)[:, None, :]
    return joints


# ---------------------------------------------------------------------------------------------
# Appearance


def _hsv(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    """A random-hue RGB colour in [0, 1] with saturation and value drawn from the given ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value)))


def _palette_colour(rng: np.random.Generator, palette: np.ndarray) -> np.ndarray:
    """A colour on the piecewise-linear path through the palette's rows."""
    position = rng.uniform(0, len(palette) - 1)
    k = min(int(position), len(palette) - 2)
    return palette[k] + (position - k) * (palette[k + 1] - palette[k])


def _appearance(rng: np.random.Generator, ranges: dict) -> dict:
    """Per-video look: colours of skin, hair and clothes, background, light, shadow, drawn from `ranges`
    (an entry of APPEARANCES). Every set of ranges makes the same draws in the same order."""
    light_x = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.85)
    light = np.array([light_x, -0.6, 0.75])  # from above, to one side, towards the camera
    shirt = _hsv(rng, *ranges["shirt"])
    skin = _palette_colour(rng, SKIN_TONES)
    return {
        "skin": skin,
        "hair": _palette_colour(rng, HAIR_TONES),
        "shirt": shirt,
        "sleeve": shirt if rng.uniform() < 0.5 else skin,
        "trousers": _hsv(rng, *ranges["trousers"]),
        "shoes": _hsv(rng, *ranges["shoes"]),
        "wall": _hsv(rng, *ranges["wall"]),
        "floor": _hsv(rng, *ranges["floor"]),
        "horizon": rng.uniform(0.45, 0.7),  # wall/floor boundary, fraction of the height
        "light": light / np.linalg.norm(light),
        "ambient": rng.uniform(*ranges["ambient"]),
        "shadow": rng.uniform(*ranges["shadow"]),  # how much the shadow darkens the floor
        "shadow_shear": -light_x * rng.uniform(0.8, 1.4),  # shadow falls away from the light
    }


def _background(look: dict, height: int, width: int) -> np.ndarray:
    """Wall over floor, float32 [3, height, width] in [0, 1].

    Both are brighter towards the light's side; the floor is darker far away.
    """
    s = SUPERSAMPLE  # supersampled so that the skirting line is anti-aliased too
    y = (np.arange(height * s) + 0.5) / (height * s)
    x = (np.arange(width * s) + 0.5) / (width * s)
    side_light = 1.0 + 0.25 * look["light"][0] * (2 * x - 1)  # brighter towards the light
    horizon = look["horizon"]
    wall = look["wall"][:, None] * (1.05 - 0.25 * y / horizon)
    floor_depth = np.clip((y - horizon) / (1 - horizon), 0, 1)
    floor = look["floor"][:, None] * (0.8 + 0.3 * floor_depth)
    skirting = np.abs(y - horizon) < 0.02  # a darker line where the wall meets the floor
    column = np.where(y < horizon, wall, floor) * np.where(skirting, 0.7, 1.0)  # [3, height * s]
    picture = column[:, None, :, None] * side_light  # [3, 1, height * s, width * s]
    return _box_filter(picture.astype(np.float32))[:, 0]


def _segment(canvas: tuple[int, int, int], a: np.ndarray, b: np.ndarray, reach: float):
    """Geometry of one segment per frame, in a window around it.

    canvas: (frames, height, width); a, b: endpoints [frames, 2] in its pixels;
    reach: how far from the segment anything will be drawn. Returns
    (flat, along, dx, dy), each [frames, h, w]: `flat` indexes the window in
    a canvas channel flattened to [frames * height * width], `along` in
    [0, 1] locates the point of the segment nearest to each pixel centre, and
    (dx, dy) is the offset of the pixel centre from that point.
    """
    n, height, width = canvas
    low = np.floor(np.minimum(a, b) - reach).astype(np.int64)
    size = np.ceil(np.maximum(a, b) + reach).astype(np.int64) - low
    win_w, win_h = min(int(size[:, 0].max()), width), min(int(size[:, 1].max()), height)
    x0 = np.clip(low[:, 0], 0, width - win_w)  # windows stay on the canvas
    y0 = np.clip(low[:, 1], 0, height - win_h)
    rows = y0[:, None] + np.arange(win_h)  # [n, h]
    cols = x0[:, None] + np.arange(win_w)  # [n, w]
    flat = (np.arange(n)[:, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]

    px = (cols + 0.5).astype(np.float32)[:, None, :] - a[:, 0, None, None]
    py = (rows + 0.5).astype(np.float32)[:, :, None] - a[:, 1, None, None]
    abx, aby = (b - a)[:, 0, None, None], (b - a)[:, 1, None, None]
    along = np.clip((px * abx + py * aby) / np.maximum(abx * abx + aby * aby, 1e-6), 0, 1)
    return flat, along, px - along * abx, py - along * aby


def _blend(canvas: np.ndarray, flat: np.ndarray, alpha: np.ndarray, colour) -> None:
    """Paint over the window `flat` of the canvas [channels, pixels] with coverage `alpha`.

    colour: one value per channel, each a scalar or an array shaped like `flat`.
    """
    for channel, value in zip(canvas, colour):
        window = channel.take(flat)
        channel.put(flat, window + alpha * (value - window))


def _paint(joints: np.ndarray, look: dict, background: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and label frames, uint8 [n, H, W, 3], and masks uint8 [n, H, W], for joints
    [n, len(JOINTS), 2] in output pixels."""
    n = len(joints)
    height, width = background.shape[1:]
    s = SUPERSAMPLE
    canvas = (n, height * s, width * s)
    scale = FIGURE_HEIGHT * height * s  # figure units -> canvas pixels
    points = (joints * s).astype(np.float32)
    segments = {}  # the image and the label share the geometry of the bones they both draw

    def segment(a: str, b: str) -> tuple[np.ndarray, ...]:
        if (a, b) not in segments:
            reach = SEGMENT_RADIUS[a, b] * scale + 1
            segments[a, b] = _segment(canvas, points[:, J[a]], points[:, J[b]], reach)
        return segments[a, b]

    # The figure: premultiplied colour and coverage, composited over the background after filtering.
    figure = np.zeros((4, n * canvas[1] * canvas[2]), np.float32)
    light = look["light"].astype(np.float32)
    ambient = look["ambient"]
    for a, b, radius_a, radius_b, material in BODY_PARTS:
        flat, along, dx, dy = segment(a, b)
        radius = (radius_a + (radius_b - radius_a) * along) * scale
        distance = np.sqrt(dx * dx + dy * dy)
        # Shade the part as a rounded solid: its surface normal is (dx, dy, nz) / radius.
        nz = np.sqrt(np.clip(radius * radius - distance * distance, 0, None))
        lambert = np.clip((dx * light[0] + dy * light[1] + nz * light[2]) / radius, 0, 1)
        brightness = ambient + (1 - ambient) * lambert
        colour = [*(brightness * channel for channel in look[material].astype(np.float32)), 1.0]
        _blend(figure, flat, np.clip(radius - distance + 0.5, 0, 1), colour)

    label = np.zeros((3, n * canvas[1] * canvas[2]), np.float32)
    for (a, b), colour in zip(LABEL_BONES, LABEL_COLOURS):
        flat, _, dx, dy = segment(a, b)
        radius = (LABEL_HEAD_RADIUS if a == b else LABEL_RADIUS) * scale
        _blend(label, flat, np.clip(radius - np.sqrt(dx * dx + dy * dy) + 0.5, 0, 1), colour)

    figure = _box_filter(figure.reshape(4, *canvas))
    images = figure[:3] + (1 - figure[3]) * _floor_with_shadow(joints, look, background)
    masks = np.where(figure[3] >= 0.5, MASK_ON, 0).astype(np.uint8)
    return _to_uint8(images), _to_uint8(_box_filter(label.reshape(3, *canvas))), masks


def _floor_with_shadow(joints: np.ndarray, look: dict, background: np.ndarray) -> np.ndarray:
    """The background [3, n, H, W] darkened by the figure's soft shadow on the floor.

    The shadow is the figure squashed onto the floor and sheared away from the
    light; it is blurry anyway, so it is drawn at output resolution.
    """
    n = len(joints)
    height, width = background.shape[1:]
    ground_y = GROUND * height
    above = ground_y - joints[..., 1]
    points = np.stack([joints[..., 0] + 0.35 * look["shadow_shear"] * above, ground_y - 0.12 * above], -1)
    points = points.astype(np.float32)
    scale = FIGURE_HEIGHT * height
    penumbra = 1.5  # width of the soft edge, pixels
    mask = np.zeros(n * height * width, np.float32)
    for a, b, radius_a, radius_b, _ in BODY_PARTS:
        reach = max(radius_a, radius_b) * scale + penumbra
        flat, along, dx, dy = _segment((n, height, width), points[:, J[a]], points[:, J[b]], reach)
        inside = (radius_a + (radius_b - radius_a) * along) * scale - np.sqrt(dx * dx + dy * dy)
        # max, so that overlapping parts do not darken the floor twice
        mask.put(flat, np.maximum(mask.take(flat), np.clip(inside / penumbra + 0.5, 0, 1)))
    on_floor = np.clip((np.arange(height) + 0.5) - look["horizon"] * height, 0, 1).astype(np.float32)
    darkening = 1 - look["shadow"] * mask.reshape(n, height, width) * on_floor[:, None]
    return background[:, None] * darkening


def _box_filter(canvas: np.ndarray) -> np.ndarray:
    """Average SUPERSAMPLE x SUPERSAMPLE blocks: [C, n, H*S, W*S] -> [C, n, H, W]."""
    channels, n, height, width = canvas.shape
    s = SUPERSAMPLE
    # Sums of contiguous slices: several times faster than .mean over the two block axes.
    rows = canvas.reshape(-1, s, width)
    rows = sum(rows[:, i] for i in range(s))
    blocks = rows.reshape(-1, width // s, s)
    return (sum(blocks[:, :, j] for j in range(s)) / (s * s)).reshape(channels, n, height // s, width // s)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """[3, n, H, W] floats in [0, 1] -> uint8 [n, H, W, 3]."""
    return np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8).transpose(1, 2, 3, 0)
