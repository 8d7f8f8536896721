"""A pack that fits: the members a worker trains in one batched pass, capped by the memory they will
need (models.memory, measured before any of them starts) against the memory its device has free, said
in one line, instead of a pack lost to an out-of-memory error halfway through its first epoch."""
from __future__ import annotations

from models.config import TrainConfig
from models.errors import ConfigError
from models.execution import resolve_device
from models.memory import RunMemory, available_bytes, run_memory

from harness.spec import StudySpec, train_values

from .training import WorkerContext

# The share of the free memory a pack may plan to fill: the rest for what no estimate sees (the CUDA
# context's growth, other processes starting beside it).
HEADROOM = 0.9


def fitting_pack(spec: StudySpec, ctx: WorkerContext) -> int:
    """The spec's pack, or fewer members where the largest trial config of its study would not fit in
    the device's free memory (the host's available memory on a CPU); at least 1."""
    if spec.pack <= 1:
        return spec.pack
    free = available_bytes(resolve_device(ctx.device))
    if free is None:
        return spec.pack
    config = largest_config(spec).replace(data=str(ctx.data_root))
    memory = run_memory(config, ctx.data)
    fits = largest_pack(memory, HEADROOM * free)
    if fits >= spec.pack:
        return spec.pack
    ctx.echo(f"pack {spec.pack} would need {memory.pack_peak(spec.pack) / 2**30:.1f} GiB on {ctx.device}, "
             f"{free / 2**30:.1f} GiB is free: packing {max(1, fits)} member(s) per pass "
             f"({memory.step_peak / 2**30:.2f} GiB per member, models/memory.py)")
    return max(1, fits)


def largest_pack(memory: RunMemory, budget: float) -> int:
    """The most members whose pack fits in `budget` bytes (0 when not even one does)."""
    members = 0
    while memory.pack_peak(members + 1) <= budget:
        members += 1
    return members


def largest_config(spec: StudySpec) -> TrainConfig:
    """The trial config of the study that needs the most memory, as far as its search space tells: every
    searched number at its highest, every searched option on (the spec's fixed values where that makes
    no valid config)."""
    base = train_values(spec, {})
    largest = dict(base)
    for name, param in spec.search_space.items():
        if param.kind in ("int", "float"):
            largest[name] = param.high
        elif True in param.choices:
            largest[name] = True
    try:
        return TrainConfig.from_dict(largest)
    except ConfigError:
        return TrainConfig.from_dict(base)
