"""What every `harness` command shares: one-line errors and messages on stderr."""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click

from models.checkpoint import CheckpointError
from models.config import ConfigError
from models.data import DataError


class UsageError(ValueError):
    """Bad input to a command, told as one line."""


def echo(message: str) -> None:
    click.echo(message, err=True)


def friendly_errors(command: Callable) -> Callable:
    """Turn the project's input errors into one line on stderr and exit status 2, never a traceback."""
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (DataError, ConfigError, CheckpointError, UsageError, ValueError, FileExistsError) as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
    return wrapper
