"""Time to generate the default synthetic data set, and to decode it into memory (cold and cached)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import record

from models.data import load_dance_data
from models.synth import generate_dataset


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        start = time.perf_counter()
        summary = generate_dataset(root)
        generate_s = time.perf_counter() - start
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        data = load_dance_data(root, cache_dir=cache)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        load_dance_data(root, cache_dir=cache)
        cached_s = time.perf_counter() - start
    frames = summary["frames"]
    record("Synthetic data set (defaults: 24x160 train, 2x630 val, 2x630 test frames at 32x64)", [
        f"- generate (render + write {summary['files']} files): {generate_s:.1f} s "
        f"(render {summary['render_seconds']:.1f} s of CPU time over threads)",
        f"- decode train+val ({len(data.train_img) + len(data.val_img)} frame pairs) into memory: {cold_s:.2f} s; "
        f"again from the .npy cache: {cached_s:.2f} s",
        f"- frames per split: {frames}",
    ])


if __name__ == "__main__":
    main()
