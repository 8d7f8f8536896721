"""SIGTERM, SIGINT and SIGHUP as a clean stop of a sweep worker (SLURM on time-out or preemption, Kubernetes,
`docker stop` and `harness sweep --workers` send SIGTERM; a terminal that closes sends SIGHUP).

The first signal only sets a flag; the trainers check it after every training step and epoch, and the
worker between trials, and raise StopRequested there, at a point where nothing is half-written: the
running trial is recorded as interrupted and queued again, and its last complete epoch's checkpoint
stays for the retry to resume from. A second SIGTERM or SIGINT stops the process at once; SIGHUP never
does (it comes several times when a launcher dies).
"""
from __future__ import annotations

import os
import signal
from types import FrameType


HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopRequested(BaseException):
    """A stop signal arrived; raised at a safe point. A BaseException, like KeyboardInterrupt: it stops
    the worker rather than failing one trial and going on."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum     # the shell's convention: 143 for SIGTERM, 130 for SIGINT


class StopSignals:
    """While in its `with` block, SIGTERM, SIGINT and SIGHUP set `received` (the first) instead of stopping."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in HANDLED}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            return
        if signum == signal.SIGHUP:
            # A hang-up is not a second request: a launcher that dies sends one for each of its threads
            # (PR_SET_PDEATHSIG fires as each thread that held the child exits), a terminal one more.
            return
        # The second signal: at once, as if no handler were installed.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def check(self) -> None:
        """Raise StopRequested if a signal has arrived."""
        if self.received is not None:
            raise StopRequested(self.received)
