"""The SQLite files of the embedded stores (optuna.db, mlflow.db): told apart from a file that is not a
database, or was cut short, before anything opens them; read without writing where their folder is
read-only."""
from __future__ import annotations

import os
from pathlib import Path

from models.errors import HarnessError

MAGIC = b"SQLite format 3\x00"
HEADER = 100                     # bytes of a SQLite file's header


class BadStoreFile(HarnessError):
    """A store's file cannot be read as one (one line naming the file and how it was given)."""


def sqlite_problem(path: Path) -> str | None:
    """What makes `path` unreadable as a SQLite database, or None. An empty file is an empty database."""
    try:
        with path.open("rb") as handle:
            header = handle.read(HEADER)
        size = path.stat().st_size
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if not header:
        return None
    if len(header) < HEADER or not header.startswith(MAGIC):
        return "is not a SQLite database"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count in the header holds when the change counter agrees with its "valid for" copy.
    if header[24:28] == header[92:96] and size < pages * page_size:
        return f"is cut short ({size} of its {pages * page_size} bytes)"
    return None


def check_sqlite_file(path: Path, given_as: str) -> None:
    """BadStoreFile unless `path` is missing (a new store) or reads as a SQLite database."""
    if not path.exists():
        return
    problem = "is a folder, not a file" if path.is_dir() else sqlite_problem(path)
    if problem:
        raise BadStoreFile(f"{given_as}: {path} {problem}; move it away, or point {given_as.split()[0]} elsewhere")


def writable_folder(path: Path) -> bool:
    """Whether files can be created in the folder of `path` (SQLite needs that for its WAL files)."""
    return os.access(path.parent, os.W_OK | os.X_OK)


def read_only_url(path: Path) -> str:
    """A SQLAlchemy URL that reads the database at `path` without writing anything, for a folder where
    nothing can be written: SQLite otherwise needs to create the WAL's shared-memory file beside it."""
    return f"sqlite:///file:{path.resolve()}?mode=ro&immutable=1&uri=true"
