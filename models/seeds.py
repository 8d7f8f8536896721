"""The random streams of a run, each seeded from the run's seed (and the epoch), so that no random
state needs saving: a run resumed at an epoch's start, on any device, draws what it would have drawn."""
from __future__ import annotations

import numpy as np

RANDOM_STREAMS = ("order", "noise", "rollout")


def stream_seed(seed: int, stream: str, epoch: int | None = None) -> int:
    """The seed of one of a run's random streams (for one epoch), hashed from the run's seed, so that
    the streams of seeds s and s + 1 (two seeds of one trial) share nothing."""
    key = [seed, RANDOM_STREAMS.index(stream)] + ([] if epoch is None else [epoch])
    return int(np.random.SeedSequence(key).generate_state(1)[0])
