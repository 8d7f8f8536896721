"""`harness sweep --workers N` (and `confirm`): N worker processes of one study on this machine, started and stopped
together, the cores split between them, their output merged line by line under a [wK] prefix.

Each worker is a plain `harness sweep` process (the study's store shares the trials out, as it does for
workers started by hand). They run in their own session, so a Ctrl-C reaches them once, through this
process: the first SIGINT or SIGTERM is passed on as SIGINT (each worker records its running trial as
interrupted and queues it again); a second one kills them.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Callable, TextIO

INTERRUPTED = 130


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """The cores split evenly, at least one thread each."""
    return max(1, (cores or os.cpu_count() or 1) // workers)


def run_workers(command: str, args: list[str], workers: int, echo: Callable[[str], None]) -> int:
    """Run `harness COMMAND *args` (sweep, confirm) `workers` times side by side; their exit status (130
    when interrupted, else the first worker's that failed, else 0)."""
    threads = threads_per_worker(workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONUNBUFFERED": "1"}
    echo(f"starting {workers} workers, {threads} thread(s) each")
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", command, *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                              start_new_session=True)
             for _ in range(workers)]
    lock = threading.Lock()
    readers = [threading.Thread(target=_relay, args=(proc.stdout, f"[w{k + 1}] ", lock), daemon=True)
               for k, proc in enumerate(procs)]
    for reader in readers:
        reader.start()
    signals = {"count": 0}

    def on_signal(signum: int, frame: object) -> None:
        signals["count"] += 1
        for proc in procs:
            if proc.poll() is None:
                if signals["count"] == 1:
                    proc.send_signal(signal.SIGINT)
                else:
                    proc.kill()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [proc.wait() for proc in procs]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for reader in readers:
            reader.join()
    if signals["count"]:
        return INTERRUPTED
    return next((code for code in codes if code != 0), 0)


def _relay(stream: TextIO, prefix: str, lock: threading.Lock) -> None:
    """Copy a worker's output to stderr line by line under its prefix (live step lines, which end
    in a carriage return on a terminal, come as lines from a pipe)."""
    for line in stream:
        with lock:
            sys.stderr.write(prefix + line)
            sys.stderr.flush()
