"""`harness data synth`: write the built-in synthetic data set."""
from __future__ import annotations

from pathlib import Path

import click

from models.synth import APPEARANCES, generate_dataset

from .checks import folder_to_write
from .common import echo, friendly_errors

# The smallest value of each count and size (models.synth checks them too, once the command runs).
AT_LEAST_ONE = click.IntRange(min=1)
FRAME_SIDE = click.IntRange(min=16)


@click.group()
def data() -> None:
    """Data sets in the lab layout."""


@data.command("synth")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write train/, val/ and test/ into.")
@click.option("--train-videos", type=AT_LEAST_ONE, default=24, show_default=True,
              help="Training videos (concatenated in train/).")
@click.option("--val-videos", type=AT_LEAST_ONE, default=2, show_default=True,
              help="Validation videos (concatenated in val/).")
@click.option("--test-videos", type=AT_LEAST_ONE, default=2, show_default=True,
              help="Test sequences (test/test_img/<i>/...).")
@click.option("--frames", type=AT_LEAST_ONE, default=160, show_default=True, help="Frames per training video.")
@click.option("--val-frames", type=AT_LEAST_ONE, default=630, show_default=True,
              help="Frames per validation and test video.")
@click.option("--height", type=FRAME_SIDE, default=32, show_default=True, help="Frame height.")
@click.option("--width", type=FRAME_SIDE, default=64, show_default=True, help="Frame width.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--appearance", type=click.Choice(list(APPEARANCES)), default="default", show_default=True,
              help="Colour ranges of the videos' looks; 'shifted' (darker, more saturated rooms, other clothes "
                   "and light) and 'bright' (white rooms, dark shirts over pale trousers) give the same motion in "
                   "colours the default set never shows.")
@friendly_errors
def data_synth(out: Path, train_videos: int, val_videos: int, test_videos: int, frames: int,
               val_frames: int, height: int, width: int, seed: int, appearance: str) -> None:
    """Write the synthetic dance data set (images, pose labels, figure masks) in the lab layout."""
    folder_to_write(out, "--out")
    summary = generate_dataset(out, train_videos=train_videos, val_videos=val_videos, test_videos=test_videos,
                               frames=frames, val_frames=val_frames, height=height, width=width, seed=seed,
                               appearance=appearance, progress=echo)
    echo(f"wrote {out}: " + ", ".join(f"{k}={v}" for k, v in summary.items() if isinstance(v, (int, float))))
