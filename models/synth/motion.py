"""The synthetic dancer's skeleton and its motion: joint positions per frame for one video.

Every joint angle is a random mixture of sinusoids at a per-video tempo, kept
inside ANGLE_RANGES, plus sway, travel and bounce of the whole body.
"""

from __future__ import annotations

import numpy as np

FIGURE_HEIGHT = 0.74  # standing figure (sole to crown) as a fraction of the frame height
GROUND = 0.93  # feet line as a fraction of the frame height

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


def dance(rng: np.random.Generator, n_frames: int, height: int, width: int) -> np.ndarray:
    """Joint positions [n_frames, len(JOINTS), 2] as (x, y) in output pixels, y down."""
    t = np.arange(n_frames, dtype=np.float64)
    period = rng.uniform(24, 56)  # frames per movement cycle: the video's tempo
    # A slow phrase, the cycle and a quick accent; the accent gets less weight so motion stays smooth.
    freqs = np.array([0.5, 1.0, 2.0]) / period
    angles = _angles(rng, t, freqs)
    figure = FIGURE_HEIGHT * height
    joints = _skeleton(angles, n_frames, figure)
    return joints + _root(rng, joints, t, period, freqs, figure, height, width)[:, None, :]


def _angles(rng: np.random.Generator, t: np.ndarray, freqs: np.ndarray) -> dict[str, np.ndarray]:
    """Each joint angle over time: a sum of three waves per channel; arms and legs per side (a pair's
    second side mirrors the first, moves in counter-phase, or on its own, drawn per video)."""
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
        left = wave_params(*ANGLE_RANGES[channel])
        coupling = rng.integers(3)
        if coupling == 2:
            return wave(left), wave(wave_params(*ANGLE_RANGES[channel]))
        return wave(left), wave(left, np.pi * coupling)

    # In this order: the draws of a seed's video stay what they were.
    angles = {"lean": wave(wave_params(*ANGLE_RANGES["lean"])), "tilt": wave(wave_params(*ANGLE_RANGES["tilt"]))}
    for channel in ("arm", "elbow", "leg", "knee"):
        angles[channel] = left_right(channel)
    return angles


def _skeleton(angles: dict[str, np.ndarray], n_frames: int, figure: float) -> np.ndarray:
    """The joints around a pelvis at the origin, from the angles, for a figure `figure` pixels tall."""
    lean, tilt, arm, elbow, leg, knee = (angles[k] for k in ("lean", "tilt", "arm", "elbow", "leg", "knee"))
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
    return joints


def _root(rng: np.random.Generator, joints: np.ndarray, t: np.ndarray, period: float, freqs: np.ndarray,
          figure: float, height: int, width: int) -> np.ndarray:
    """Where the pelvis goes, [n_frames, 2]: the lowest foot rests on the floor, lifted by a bounce; the
    body sways and travels."""
    feet = joints[:, [J["ankle_l"], J["toe_l"], J["ankle_r"], J["toe_r"]], 1].max(1)
    bounce_height = rng.uniform(0.0, 0.05) * figure
    bounce = bounce_height * (0.5 - 0.5 * np.cos(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)))
    root_y = GROUND * height - SOLE_BELOW_ANKLE * figure - feet - bounce
    room = max(0.0, width / 2 - 0.55 * figure)  # how far the pelvis may go before arms leave the frame
    sway = rng.uniform(0.0, 0.08) * figure * np.sin(2 * np.pi * freqs[0] * t + rng.uniform(0, 2 * np.pi))
    travel_period = rng.uniform(4, 10) * period
    travel = rng.uniform(0.2, 0.7) * room * np.sin(2 * np.pi * t / travel_period + rng.uniform(0, 2 * np.pi))
    root_x = width / 2 + np.clip(travel + sway, -room, room)
    return np.stack([root_x, root_y], -1)
