"""Counting the points where the host would wait for a GPU: a scalar read (`item`, `bool`, `float`, an
implicit conversion such as a device tensor passed where a number is expected), a copy to the host
(`cpu`, `tolist`, `numpy`, `to("cpu")`), a blocking copy from the host (`to(device)` without
`non_blocking`, `torch.tensor(..., device=...)`), and an op whose output size depends on device values
(`nonzero`, a boolean mask, `unique`, ...).

On a GPU each tensor's device says where it lives. On a CPU, where host and "device" are one, the
counter follows which tensors a GPU run would hold on the device: the given roots (weights,
optimizer state, data on the device), whatever a device generator draws, whatever a factory makes
with `device=` the counted device, and everything computed from those; so the same code can be
counted on a CPU (tests/unit/models/test_gpu_readiness.py; bench/host_syncs.py). Self-contained
(torch only), so the bench can count an older checkout of models/ with it.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

aten = torch.ops.aten
# Ops whose output size is known only once the device has computed their input.
DATA_DEPENDENT = {aten.nonzero.default, aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
                  aten.unique_consecutive.default, aten.repeat_interleave.Tensor}
# Tensor methods that read a tensor into host memory; counted here only on a CPU run (on a GPU the copy
# they make is seen as an op).
HOST_READS = {torch.Tensor.tolist: "tolist", torch.Tensor.numpy: "numpy", torch.Tensor.cpu: "copy to host"}


class HostSyncs:
    """A context that counts host synchronisations of the code it runs (see the module's doc).

    `device`: the device the counted code trains on; `roots`: tensors that live there at the start
    (needed on a CPU only); `generators`: random generators of that device (likewise). After the
    block, `count` is the number of synchronisations and `events` says which, by kind and op."""

    def __init__(self, device: torch.device | str, roots: Iterable[torch.Tensor] = (),
                 generators: Iterable[torch.Generator] = ()):
        self.device = torch.device(device)
        self._on_device = WeakIdKeyDictionary()
        for tensor in roots:
            self._on_device[tensor] = True
        self._generators = list(generators)
        self.events: Counter[tuple[str, str]] = Counter()
        self._modes = (_Functions(self), _Dispatch(self))

    @property
    def count(self) -> int:
        return sum(self.events.values())

    def __enter__(self) -> HostSyncs:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    # -- where a tensor lives ------------------------------------------------------
    def on_device(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor) and (value.device.type != "cpu" or value in self._on_device)

    def simulated(self) -> bool:
        """A CPU run standing for a device run: residence is followed, not read off the tensors."""
        return self.device.type == "cpu"

    def mark(self, values: Any, on_device: bool = True) -> None:
        for leaf in tree_leaves(values):
            if isinstance(leaf, torch.Tensor) and leaf.device.type == "cpu":
                if on_device:
                    self._on_device[leaf] = True
                else:
                    self._on_device.pop(leaf, None)

    def drawn_on_device(self, kwargs: dict) -> bool:
        generator = kwargs.get("generator")
        return generator is not None and any(generator is g for g in self._generators)

    def record(self, kind: str, op: Any) -> None:
        self.events[(kind, getattr(op, "__name__", str(op)))] += 1


class _Dispatch(TorchDispatchMode):
    """Scalar reads, data-dependent sizes and cross-device copies as aten ops; follows residence."""

    def __init__(self, counter: HostSyncs):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        counter = self.counter
        inputs = [leaf for leaf in tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)]
        from_device = any(counter.on_device(t) for t in inputs) or counter.drawn_on_device(kwargs)
        if from_device and func is aten._local_scalar_dense.default:
            counter.record("scalar read", func)
        elif from_device and (func in DATA_DEPENDENT or _boolean_index(func, args)):
            counter.record("data-dependent size", func)
        out = func(*args, **kwargs)
        if not counter.simulated():
            _count_real_copy(counter, func, args, kwargs, out)
        elif from_device:
            counter.mark(out)
            counter.mark(_written(func, args, kwargs))
        return out


class _Functions(TorchFunctionMode):
    """On a CPU run: host reads that never reach the dispatcher there, moves to the device, factories
    that name the device."""

    def __init__(self, counter: HostSyncs):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        counter = self.counter
        if not counter.simulated():
            return func(*args, **kwargs)
        source = args[0] if args else None
        if func in HOST_READS and counter.on_device(source):
            counter.record(HOST_READS[func], func)
            out = func(*args, **kwargs)
            if out is source:               # .cpu() of a CPU tensor is itself: the host copy is a new tensor
                out = source.detach().clone()
                counter.mark(out, on_device=False)
            return out
        if func is torch.Tensor.to and not counter.on_device(source) and _target(args, kwargs) == counter.device:
            if not kwargs.get("non_blocking", False):
                counter.record("blocking copy to device", func)
            out = func(*args, **kwargs)
            out = source.detach().clone() if out is source else out
            counter.mark(out)
            return out
        out = func(*args, **kwargs)
        if _names_device(kwargs, counter.device):
            if func in (torch.tensor, torch.as_tensor):
                counter.record("blocking copy to device", func)
            counter.mark(out)
        return out


def _boolean_index(func, args) -> bool:
    return func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default) and any(
        isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()))


def _written(func, args, kwargs) -> list:
    """The arguments an in-place op writes (foreach ops return nothing, so their outputs say nothing)."""
    written = []
    for i, argument in enumerate(func._schema.arguments):
        if argument.alias_info is not None and argument.alias_info.is_write:
            written.append(args[i] if i < len(args) else kwargs.get(argument.name))
    return written


def _target(args, kwargs) -> torch.device | None:
    """The device of a Tensor.to call, when it names one."""
    for value in (*args[1:], kwargs.get("device")):
        if isinstance(value, (str, torch.device)):
            return torch.device(value)
        if isinstance(value, torch.Tensor):
            return value.device
    return None


def _names_device(kwargs, device: torch.device) -> bool:
    named = kwargs.get("device")
    # On a CPU run a literal "cpu" names the host (torch's own code writes it for host-side counters, as
    # Adam's step counts); the counted device comes as a torch.device, the trainer's or a tensor's.
    if named is None or (device.type == "cpu" and named == "cpu"):
        return False
    return torch.device(named).type == device.type


def _count_real_copy(counter: HostSyncs, func, args, kwargs, out) -> None:
    """On a GPU run: a copy between host and device without non_blocking waits for the device."""
    if func is aten._to_copy.default:
        source, target = args[0], out
    elif func is aten.copy_.default:
        target, source = args[0], args[1]
    else:
        return
    if isinstance(source, torch.Tensor) and (source.device.type == "cpu") != (target.device.type == "cpu") \
            and not kwargs.get("non_blocking", False) and not (len(args) > 2 and args[2]):
        counter.record("copy to host" if target.device.type == "cpu" else "blocking copy to device", func)
