"""Checks of what a user typed, made before a command does any work: the folders and files it will
write, the device it will train on, the port it will serve on. Each failure is one UsageError naming
the option and the way out."""
from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from harness.errors import UsageError
from harness.store.locations import NAME_MAX

# The longest path most file systems take (PATH_MAX), in bytes.
PATH_MAX = 4095


def check_path_length(path: Path, given_as: str) -> None:
    """A path the file system can hold: no part longer than NAME_MAX bytes, the whole within PATH_MAX."""
    longest = max((part for part in path.parts), key=lambda part: len(part.encode()), default="")
    if len(longest.encode()) > NAME_MAX:
        raise UsageError(f"{given_as} {_short(path)}: a name in it is {len(longest.encode())} bytes long, over the "
                         f"{NAME_MAX} a file system takes; choose a shorter one")
    if len(str(path.absolute()).encode()) > PATH_MAX:
        raise UsageError(f"{given_as} {_short(path)}: the path is over {PATH_MAX} bytes long; choose a shorter one")


def folder_to_write(path: Path, given_as: str) -> Path:
    """`path` as a folder that exists and takes files, or that can be created: each existing part of it a
    folder, the deepest existing one writable. Creates nothing."""
    check_path_length(path, given_as)
    _check_creatable(path, given_as, path)
    return path


def file_to_write(path: Path, given_as: str) -> Path:
    """`path` as a file that can be written: a writable file, or a new one in a folder that can take it."""
    check_path_length(path, given_as)
    if path.is_dir():
        raise UsageError(f"{given_as} {path}: is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{given_as} {path}: cannot be written ({_why_not_writable(path)}); choose another file")
    _check_creatable(path.parent, given_as, path)
    return path


def _check_creatable(folder: Path, given_as: str, given: Path) -> None:
    """A UsageError about `given` (as typed) unless `folder` exists and takes files, or can be created."""
    existing = folder.absolute()
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{given_as} {given}: {existing} is a file, not a folder; choose another place")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{given_as} {given}: {existing} cannot be written ({_why_not_writable(existing)}); "
                         "choose a place you can write")


def file_to_read(path: Path, given_as: str) -> Path:
    """`path` as a file with something in it (click has checked that it exists)."""
    if path.stat().st_size == 0:
        raise UsageError(f"{given_as} {path}: the file is empty")
    return path


def _why_not_writable(path: Path) -> str:
    try:
        return "read-only file system" if os.statvfs(path).f_flag & os.ST_RDONLY else "permission denied"
    except OSError as err:
        return err.strerror or str(err)


def check_device(name: str, given_as: str = "--device") -> None:
    """A torch device this machine has: `auto`, `cpu`, or an accelerator that torch finds here."""
    import torch

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"{given_as} {name}: not a torch device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return
    backend = getattr(torch, device.type, None) if device.type != "mps" else torch.backends.mps
    if backend is None or not hasattr(backend, "is_available"):
        raise UsageError(f"{given_as} {name}: not a device the trainer runs on; use auto, cpu, cuda, cuda:N or mps")
    if not backend.is_available():
        raise UsageError(f"{given_as} {name}: this machine has no {device.type} device that torch {torch.__version__} "
                         "can use; use --device cpu (or auto)")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        raise UsageError(f"{given_as} {name}: this machine has {count} {device.type} device(s), numbered from 0")


def check_port_free(host: str, port: int) -> None:
    """Nothing listens on host:port yet (a server started there would fail after its start-up)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            reason = "in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
            raise UsageError(f"--port {port} on --host {host}: cannot listen there ({reason}); choose another "
                             "port or host") from None


def _short(path: Path) -> str:
    """A path too long to read in full, shortened for a message."""
    text = str(path)
    return text if len(text) <= 120 else f"{text[:60]}...{text[-40:]}"
