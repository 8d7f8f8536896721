"""A worker's console may close under it (its launcher died, `| head`, a dropped session): its lines are
lost from then on, and nothing it was doing fails."""
from __future__ import annotations

import errno
import io
import os
import signal
import sys

import click
import pytest

from harness.outputs.console import LosableConsole, losable_console
from harness.worker.signals import StopRequested, StopSignals


def pipe_without_reader() -> io.TextIOWrapper:
    read_end, write_end = os.pipe()
    os.close(read_end)
    return io.TextIOWrapper(io.FileIO(write_end, "w"), encoding="utf-8", write_through=True)


def test_writing_to_a_pipe_nobody_reads_loses_the_lines_and_goes_on():
    stream = pipe_without_reader()
    with pytest.raises(BrokenPipeError):     # what a trial met before
        stream.write("epoch 1\n")
    console = LosableConsole(pipe_without_reader())
    assert console.write("epoch 1\n") == len("epoch 1\n") and console.lost
    console.write("epoch 2\n")
    console.flush()
    assert not console.isatty()


def test_other_write_errors_are_not_hidden():
    class FullDisk(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    console = LosableConsole(FullDisk())
    with pytest.raises(OSError, match="No space left"):
        console.write("epoch 1\n")
    assert not console.lost


def test_click_echo_inside_a_worker_survives_a_closed_stderr(monkeypatch):
    monkeypatch.setattr(sys, "stderr", pipe_without_reader())
    with losable_console():
        click.echo("trial 3: lr=0.002", err=True)
        assert sys.stderr.lost
    assert not isinstance(sys.stderr, LosableConsole)     # put back as it was


def test_hang_ups_are_one_clean_stop_however_many_arrive():
    """A dead launcher's kernel signal comes once per thread it had: none of them may count as the
    second signal that stops a worker at once, before its trial is recorded."""
    with StopSignals() as stop:
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGHUP)
        with pytest.raises(StopRequested) as stopped:
            stop.check()
    assert str(stopped.value) == "interrupted by SIGHUP" and stopped.value.exit_status == 129
