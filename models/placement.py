"""Where a run's data lives. A data set that fits lives on the run's device, uploaded once and shared by
every trainer of the process that trains on the same data (the members of a pack, the seeds of a
trial): a training batch is then an index into it. One that would take more than DEVICE_SHARE of the
device's free memory stays on the host, and each batch is copied over as it is drawn."""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch.utils.weak import WeakIdKeyDictionary

# The most of a device's free memory that the data may take: the rest is for the models, their
# activations and the other members of a pack (models.memory).
DEVICE_SHARE = 0.25

_log = logging.getLogger(__name__)
# Device copies by the host tensor they copy (the base of a view), then by view and device: they live as
# long as the host data does.
_copies: WeakIdKeyDictionary = WeakIdKeyDictionary()


def free_bytes(device: torch.device) -> int | None:
    """The device's free memory in bytes; None where torch does not say (the CPU, MPS)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return None


def shared_copy(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`, the same copy for every caller while the host tensor lives."""
    device = _indexed(device)
    if tensor.device == device:
        return tensor
    copies, key = _entry(tensor, device)
    if key not in copies:
        copies[key] = tensor.to(device)
    return copies[key]


def place(tensors: Sequence[torch.Tensor], device: torch.device, what: str) -> tuple[list[torch.Tensor], bool]:
    """`tensors` on `device` (shared copies) and True, when their bytes not yet there fit in DEVICE_SHARE
    of its free memory; else the tensors as they are, on the host, and False, said in one line."""
    device = _indexed(device)
    missing = sum(t.numel() * t.element_size() for t in tensors if not _copied(t, device))
    free = free_bytes(device)
    if free is not None and missing > DEVICE_SHARE * free:
        _log.warning(f"{what}: {missing / 2**20:.0f} MiB would take more than {DEVICE_SHARE:.0%} of {device}'s "
                     f"{free / 2**20:.0f} MiB free; kept on the host, each batch copied to the device")
        return list(tensors), False
    return [shared_copy(t, device) for t in tensors], True


def _indexed(device: torch.device) -> torch.device:
    """cuda is cuda:<current device>, so that both names find one copy."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _copied(tensor: torch.Tensor, device: torch.device) -> bool:
    copies, key = _entry(tensor, device)
    return tensor.device == device or key in copies


def _entry(tensor: torch.Tensor, device: torch.device) -> tuple[dict, tuple]:
    """The copies of `tensor`'s host data, and the key of `tensor` (a view of it) on `device` there."""
    base = tensor if tensor._base is None else tensor._base
    key = (str(device), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()))
    return _copies.setdefault(base, {}), key
