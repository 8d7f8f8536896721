"""The names of a run's checkpoint files, apart from the trainer so that readers of a store
(the MLflow side of a sweep, `harness best`) can name them without importing torch."""
from __future__ import annotations

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
