"""What `harness generate` leaves in its folder: a GIF per test sequence, the submission CSV, and where
ground truth exists the PSNR per frame of the model beside the baselines (CSV and PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from models.records import MODEL, REGIONS, Generated

from .gif import write_rollout_gif
from .plots import plot_psnr_per_frame

SUBMISSION_CSV = "submission.csv"
GENERATED_PSNR_CSV = "psnr_per_frame.csv"
GENERATED_PSNR_PNG = "psnr_per_frame.png"


def rollout_gif_name(index: int) -> str:
    return f"rollout_{index}.gif"


def write_generation(runs: dict[str, list[Generated]], out_dir: Path, title: str) -> list[str]:
    """Write the folder; returns the lines that sum it up (each curve's mean PSNR, what was written)."""
    generated = runs[MODEL]
    for gen in generated:
        write_rollout_gif(out_dir / rollout_gif_name(gen.index), prediction=gen.frames, truth=gen.truth,
                          pose=gen.poses)
    write_submission_csv(generated, out_dir / SUBMISSION_CSV)
    lines = []
    if len(runs) > 1:
        table = psnr_rows(runs)
        table.to_csv(out_dir / GENERATED_PSNR_CSV, index=False)
        whole, figure = {}, {}
        for name, results in runs.items():
            for gen in results:
                if gen.psnr is not None:
                    label = f"sequence {gen.index}" + ("" if name == MODEL else f": {name}")
                    whole[label] = gen.psnr
                    if "figure" in gen.region_psnr:
                        figure[label] = gen.region_psnr["figure"]
        plot_psnr_per_frame(whole, out_dir / GENERATED_PSNR_PNG, title=title, figure_psnr=figure or None)
        predicted = table[table.frame > 0]
        for name, part in predicted.groupby("curve", sort=False):
            regions = ", ".join(f"{region} {part[f'psnr_{region}'].mean():.2f} dB"
                                for region in REGIONS if f"psnr_{region}" in part)
            lines.append(f"mean PSNR over predicted frames, {name}: {part.psnr.mean():.2f} dB"
                         + (f" ({regions})" if regions else ""))
    lines.append(f"wrote {len(generated)} GIF(s), {SUBMISSION_CSV} ({sum(len(g.frames) for g in generated)} rows) "
                 f"to {out_dir}")
    return lines


def psnr_rows(runs: dict[str, list[Generated]]) -> pd.DataFrame:
    """One row per curve, sequence and frame; region columns only where the test split has masks (NaN
    in a frame without the figure)."""
    rows = []
    for name, results in runs.items():
        for gen in results:
            if gen.psnr is not None:
                rows += [{"curve": name, "sequence": gen.index, "frame": i, "psnr": float(v),
                          **{f"psnr_{region}": float(values[i]) for region, values in gen.region_psnr.items()}}
                         for i, v in enumerate(gen.psnr)]
    return pd.DataFrame(rows)


def write_submission_csv(generated: list[Generated], path: Path) -> None:
    """The lab's submission format: a header, an `id` column counting rows from 0, then each frame's
    values flattened in C, H, W order as integers round(255 x); sequences one after another."""
    frames = np.concatenate([g.frames for g in generated]).reshape(-1, np.prod(generated[0].frames.shape[1:]))
    values = frames.astype(np.int64)
    ids = np.arange(len(values))[:, None]
    header = "id," + ",".join(str(i) for i in range(values.shape[1]))
    np.savetxt(path, np.hstack([ids, values]), fmt="%d", delimiter=",", header=header, comments="")
