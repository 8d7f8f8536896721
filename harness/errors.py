"""Errors of the harness layer; all are models.errors.HarnessError, told as one line."""
from __future__ import annotations

from models.errors import HarnessError


class UsageError(HarnessError):
    """Bad input to a command or a bad setting, told as one line naming the option or variable."""


class SweepError(HarnessError):
    """The sweep cannot go on (one line, shown to the user)."""
