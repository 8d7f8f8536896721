"""The random streams of a run, each seeded from the run's seed."""
from __future__ import annotations

import numpy as np

RANDOM_STREAMS = ("order", "noise", "rollout")


def stream_seed(seed: int, stream: str) -> int:
    """The seed of one of a run's random streams, hashed from the run's seed, so that the
    streams of seeds s and s + 1 (two seeds of one trial) share nothing."""
    return int(np.random.SeedSequence([seed, RANDOM_STREAMS.index(stream)]).generate_state(1)[0])
