"""A console a long job can outlive: when the pipe or terminal its lines go to closes (a launcher that died,
`| head`, a dropped SSH session), the job's lines go nowhere instead of failing the trial that wrote them.

Everything a trial produces is in its run folder and the stores; the console only shows it. A worker whose
launcher died still gets the kernel's SIGHUP for it (processes.py) and stops at its next safe point."""
from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Any, Iterator, TextIO

GONE = (errno.EPIPE, errno.EIO)     # a pipe with no reader; a terminal that hung up


class LosableConsole:
    """A text stream that turns into os.devnull the first time writing to it fails because it is gone."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self.lost = False

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as err:
            self._lose(err)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as err:
            self._lose(err)

    def _lose(self, err: OSError) -> None:
        if err.errno not in GONE:
            raise err
        self.lost = True
        self._stream = open(os.devnull, "w", encoding="utf-8")

    def __getattr__(self, name: str) -> Any:     # isatty, encoding, fileno...: the stream's own
        return getattr(self._stream, name)


@contextlib.contextmanager
def losable_console() -> Iterator[None]:
    """While inside, sys.stdout and sys.stderr are LosableConsoles."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = LosableConsole(sys.stdout), LosableConsole(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
