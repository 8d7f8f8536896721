"""Drawing a synthetic video from its joints and look: image, label and mask frames.

Each frame is drawn twice:

* the label: the skeleton as coloured limbs on black, the same colours in
  every video (like an OpenPose rendering);
* the image: the same pose with the video's skin, hair and clothing colours,
  a wall-and-floor background, a light direction that shades every body part
  as a rounded solid, and a soft shadow on the floor cast away from the light.

The mask is MASK_ON where the figure covers at least half of the pixel and 0
elsewhere (grayscale), so that metrics can score the figure and the
background apart.

Body parts are capsules (round-ended segments, optionally tapered). Each one
is evaluated only in a small window around it, batched over frames, on a
canvas supersampled SUPERSAMPLE times and box-filtered down for
anti-aliasing; there are no per-pixel Python loops.
"""

from __future__ import annotations

import colorsys

import numpy as np

from .motion import FIGURE_HEIGHT, GROUND, HEAD_RADIUS, J

SUPERSAMPLE = 2  # canvas pixels per output pixel along each axis
CHUNK_CANVAS_PIXELS = 1 << 19  # canvas pixels rendered at once; bounds memory for any frame size
MASK_ON = 255  # mask value where the figure covers at least half of the pixel

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


def paint_video(joints: np.ndarray, look: dict, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and label frames, uint8 [n, height, width, 3], and masks uint8 [n, height, width], of the
    figure with joints [n, len(JOINTS), 2] in output pixels and the look of synth_look.draw_look."""
    n_frames = len(joints)
    background = _background(look, height, width)
    images = np.empty((n_frames, height, width, 3), np.uint8)
    labels = np.empty_like(images)
    masks = np.empty((n_frames, height, width), np.uint8)
    chunk = max(1, CHUNK_CANVAS_PIXELS // (height * width * SUPERSAMPLE**2))
    for start in range(0, n_frames, chunk):
        frames = slice(start, start + chunk)
        images[frames], labels[frames], masks[frames] = _paint(joints[frames], look, background)
    return images, labels, masks


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
