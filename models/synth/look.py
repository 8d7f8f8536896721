"""A synthetic video's look: skin, hair and clothing colours, room colours, light and shadow, drawn at random."""

from __future__ import annotations

import colorsys

import numpy as np

# Skin and hair colours are drawn along these light-to-dark palettes.
SKIN_TONES = np.array([[0.98, 0.84, 0.72], [0.86, 0.64, 0.48], [0.62, 0.42, 0.28], [0.36, 0.23, 0.15]])
HAIR_TONES = np.array([[0.08, 0.06, 0.05], [0.30, 0.18, 0.09], [0.62, 0.40, 0.18], [0.90, 0.78, 0.50]])


def _hsv(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    """A random-hue RGB colour in [0, 1] with saturation and value drawn from the given ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value)))


def _palette_colour(rng: np.random.Generator, palette: np.ndarray) -> np.ndarray:
    """A colour on the piecewise-linear path through the palette's rows."""
    position = rng.uniform(0, len(palette) - 1)
    k = min(int(position), len(palette) - 2)
    return palette[k] + (position - k) * (palette[k + 1] - palette[k])


def draw_look(rng: np.random.Generator, ranges: dict) -> dict:
    """Per-video look: colours of skin, hair and clothes, background, light, shadow, drawn from `ranges`
    (an entry of models.synth.APPEARANCES). Every set of ranges makes the same draws in the same order."""
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
