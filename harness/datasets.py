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


def synthetic_root(height: int, width: int, seed: int = 0,
                   progress: Callable[[str], None] | None = None) -> Path:
    """The default synthetic data set at this frame size, generated on first use."""
    target = cache_root() / "synthetic" / f"v{SYNTH_VERSION}-{height}x{width}-seed{seed}"
    if (target / "synth.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(f"generating the synthetic data set once into {target}")
    try:
        generate_dataset(target, height=height, width=width, seed=seed)  # written aside, then renamed
    except FileExistsError:
        if not (target / "synth.json").is_file():  # not a finished set from a concurrent process
            raise
    return target


def frames_cache_dir() -> Path:
    return cache_root() / "frames"


def resolve_data_root(data: str | None, height: int, width: int,
                      progress: Callable[[str], None] | None = None) -> Path:
    return Path(data) if data else synthetic_root(height, width, progress=progress)
