"""A run's precision and determinism as torch's backend flags, set while the run computes and restored
after, so that other code in the process (another trainer of a sweep worker, a test) keeps its own.

Most of these flags are process-wide, not thread-local (TF32 for matmuls and convolutions, cuDNN's
benchmark and deterministic modes, torch.use_deterministic_algorithms): two trainings with different
settings in two threads of one process would see each other's. The harness trains one run (or one
pack of runs with one setting: models.packed_trainer.pack_key) at a time per process.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .errors import ConfigError

# cuBLAS is deterministic with a fixed workspace: one of these two values (NVIDIA's cuBLAS docs).
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")
CUBLAS_WORKSPACE_CONFIG = "CUBLAS_WORKSPACE_CONFIG"


def prepare_process(device: torch.device, deterministic: bool) -> None:
    """What a deterministic CUDA run needs before its first cuBLAS call: a fixed cuBLAS workspace, set
    here when the environment has none (cuBLAS reads it once per handle, so a process that ran matmuls
    on CUDA before should have it in its environment from the start)."""
    if not deterministic or device.type != "cuda":
        return
    value = os.environ.setdefault(CUBLAS_WORKSPACE_CONFIG, CUBLAS_DETERMINISTIC[0])
    if value not in CUBLAS_DETERMINISTIC:
        raise ConfigError(f"deterministic: true needs {CUBLAS_WORKSPACE_CONFIG} unset or one of "
                          f"{', '.join(CUBLAS_DETERMINISTIC)}; the environment has {value!r}")


def _precision(tf32: bool) -> str:
    return "tf32" if tf32 else "ieee"


@contextlib.contextmanager
def backend_flags(device: torch.device, tf32: bool, deterministic: bool) -> Iterator[None]:
    """Within the block: float32 matmuls and convolutions in IEEE fp32 (TF32 with `tf32`, which only
    CUDA has; the CPU's oneDNN computes fp32 as fp32 whatever the process asked); with `deterministic`
    deterministic algorithms everywhere and, on CUDA, attention by its math kernel (the fused kernels'
    backward passes add up in a varying order); else cuDNN benchmark mode on CUDA."""
    # TF32 through the per-operator fp32_precision settings only: torch refuses to read the older
    # allow_tf32 flags once the two ways have been mixed.
    precision = [(torch.backends.cuda.matmul, _precision(tf32)), (torch.backends.cudnn.conv, _precision(tf32)),
                 (torch.backends.mkldnn.matmul, "ieee"), (torch.backends.mkldnn.conv, "ieee")]
    saved_precision = [backend.fp32_precision for backend, _ in precision]
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        for backend, value in precision:
            backend.fp32_precision = value
        torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.use_deterministic_algorithms(deterministic)
        with sdpa_kernel(SDPBackend.MATH) if deterministic and device.type == "cuda" else contextlib.nullcontext():
            yield
    finally:
        for (backend, _), value in zip(precision, saved_precision):
            backend.fp32_precision = value
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
