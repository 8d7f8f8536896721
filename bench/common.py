"""Shared by the benchmark scripts: machine description and appending results to BENCHMARKS.md."""
from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine() -> str:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())   # the first core's entries
    except OSError:
        pass
    cpu = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    # Virtual machines share a model name across CPU generations; the widest vector unit tells them apart.
    vector = next((name for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"),
                                           ("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags), "")
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}{f' ({vector})' if vector else ''}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; Python {platform.python_version()}")


def record(title: str, lines: list[str], append: bool = True) -> None:
    """Print the figures, dated and with the machine, and append them to BENCHMARKS.md unless told not to
    (a probe's figures are worth reading, not keeping)."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    block = [f"### {title} ({stamp})", "", f"Machine: {machine()}", "", *lines, ""]
    print("\n".join(block))
    if append:
        # A reading written by hand under the previous block may end the file without a blank line.
        separator = "" if BENCHMARKS_MD.read_text().endswith("\n\n") else "\n"
        with open(BENCHMARKS_MD, "a") as handle:
            handle.write(separator + "\n".join(block) + "\n")
