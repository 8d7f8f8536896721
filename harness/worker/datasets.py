"""Where training data comes from: a user's folder, or the built-in synthetic set cached once."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from models.synth import generate_dataset

# Bump when the generator's output changes, so stale caches are not reused (2: figure masks).
SYNTH_VERSION = 2


def cache_root() -> Path:
    """$HARNESS_CACHE_DIR, else ~/.cache/harness."""
    return Path(os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "harness")


def synthetic_root(height: int, width: int, seed: int = 0, progress: Callable[[str], None] | None = None,
                   appearance: str = "default") -> Path:
    """The synthetic data set at this frame size (the default one: seed 0, default appearance),
    generated on first use."""
    look = "" if appearance == "default" else f"-{appearance}"
    target = cache_root() / "synthetic" / f"v{SYNTH_VERSION}-{height}x{width}-seed{seed}{look}"
    if (target / "synth.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(f"generating the synthetic data set once into {target}")
    try:
        generate_dataset(target, height=height, width=width, seed=seed, appearance=appearance)  # written aside, renamed
    except FileExistsError:
        if not (target / "synth.json").is_file():  # not a finished set from a concurrent process
            raise
    return target


def frames_cache_dir() -> Path:
    return cache_root() / "frames"


def resolve_data_root(data: str | None, height: int, width: int,
                      progress: Callable[[str], None] | None = None) -> Path:
    return Path(data) if data else synthetic_root(height, width, progress=progress)
