"""Shared by the benchmark scripts: machine description and appending results to BENCHMARKS.md."""
from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; Python {platform.python_version()}")


def record(title: str, lines: list[str]) -> None:
    """Print the figures and append them, dated and with the machine, to BENCHMARKS.md."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    block = [f"### {title} ({stamp})", "", f"Machine: {machine()}", "", *lines, ""]
    print("\n".join(block))
    with open(BENCHMARKS_MD, "a") as handle:
        handle.write("\n".join(block) + "\n")
