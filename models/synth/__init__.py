"""The built-in synthetic dance data: motion (motion.py), looks (look.py), drawing (render.py), and
the data set in the lab layout (dataset.py)."""
from .dataset import APPEARANCES, generate_dataset, render_video

__all__ = ["APPEARANCES", "generate_dataset", "render_video"]
