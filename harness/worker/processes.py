"""`harness sweep --workers N` (and `confirm`): N worker processes of one study on this machine, started and stopped
together, the cores split between them, their output merged line by line under a [wK] prefix.

Each worker is a plain `harness sweep` process (the study's store shares the trials out, as it does for
workers started by hand). They run in their own session, so a Ctrl-C reaches them once, through this
process: the first SIGINT or SIGTERM is passed on to each worker (which records its running trial as
interrupted and queues it again), and this process then exits with that signal's status (130, 143); a
second one kills them. Should this process itself die (SIGKILL, a closed session), each worker gets a
SIGHUP from the kernel (Linux), once for each thread this process had: it queues its trial again, rather
than fail it on a broken output pipe (a repeated SIGTERM would stop it at once, unrecorded).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from typing import Callable, TextIO


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """The cores split evenly, at least one thread each."""
    return max(1, (cores or os.cpu_count() or 1) // workers)


def run_workers(command: str, args: list[str], workers: int, echo: Callable[[str], None],
                extra_env: dict[str, str]) -> int:
    """Run `harness COMMAND *args` (sweep, confirm) `workers` times side by side, `extra_env` added to their
    environment; their exit status (128 + the signal's number when a signal stopped them, else the first
    worker's that failed, else 0)."""
    threads = threads_per_worker(workers)
    env = {**os.environ, **extra_env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONUNBUFFERED": "1"}
    echo(f"starting {workers} workers, {threads} thread(s) each")
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", command, *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                              start_new_session=True, preexec_fn=_stop_with_parent)
             for _ in range(workers)]
    lock = threading.Lock()
    readers = [threading.Thread(target=_relay, args=(proc.stdout, f"[w{k + 1}] ", lock), daemon=True)
               for k, proc in enumerate(procs)]
    for reader in readers:
        reader.start()
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        for proc in procs:
            if proc.poll() is None:
                if len(received) == 1:
                    proc.send_signal(signum)
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
    if received:
        return 128 + received[0]     # the shell's convention, as a single worker exits (signals.StopRequested)
    return next((code for code in codes if code != 0), 0)


PR_SET_PDEATHSIG = 1      # linux/prctl.h


def _stop_with_parent() -> None:
    """In a worker before it starts: the kernel sends it SIGHUP when this process dies (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGHUP)


def _relay(stream: TextIO, prefix: str, lock: threading.Lock) -> None:
    """Copy a worker's output to stderr line by line under its prefix (live step lines, which end
    in a carriage return on a terminal, come as lines from a pipe)."""
    for line in stream:
        with lock:
            sys.stderr.write(prefix + line)
            sys.stderr.flush()
