"""The project's one error base: a problem with the user's input or environment.

Every HarnessError is told to the user as one line that names the file, option or
setting at fault (the CLI exits with status 2). Any other exception is a bug, and
the CLI says so instead of disguising it as bad input.
"""
from __future__ import annotations


class HarnessError(Exception):
    """Bad input or environment; the message is one line naming what is wrong and where."""


class ConfigError(HarnessError):
    """A configuration value is out of range; the message names the key."""


class DeviceError(HarnessError):
    """The requested device is not on this machine; the message names it and what to use instead."""


class DataError(HarnessError):
    """Bad input data; the message names the path and what is wrong."""


class CheckpointError(HarnessError):
    """A checkpoint file is missing or not one of ours; the message names the file."""


class OutputExists(HarnessError, FileExistsError):
    """An output folder that must be new (or empty) is not."""
