"""Where a sweep keeps its state: the Optuna storage, the MLflow tracking store, trial folders.

By default everything lives under one runs directory (SQLite files and an
artifact folder), so a first sweep needs nothing set up. `--storage` and
`--tracking-uri` (or $HARNESS_STORAGE and $MLFLOW_TRACKING_URI) point at
PostgreSQL (or a journal file on a shared file system) and an MLflow server instead.
"""
from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.request
import zlib
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from harness.errors import UsageError
from harness.outputs.names import trial_name
from models.errors import HarnessError

from .sqlite_files import check_sqlite_file, read_only_url, writable_folder
from .urls import check_storage_url, check_tracking_uri, mask_secrets

DEFAULT_RUNS_DIR = "harness-runs"
OPTUNA_DB = "optuna.db"
MLFLOW_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
TRIALS_DIR = "trials"
# Seconds a SQLite connection waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT = 120
# Seconds to wait for a PostgreSQL server or an MLflow tracking server to answer before giving up.
CONNECT_TIMEOUT = 10
# The longest file name most file systems take (NAME_MAX), in bytes.
NAME_MAX = 255


class StoreUnavailable(HarnessError):
    """A storage or tracking server that cannot be reached (one line naming the option)."""


class NoStore(HarnessError):
    """A read-only command pointed at a place that holds no study store (it creates none there)."""


class UnsafeStudyName(UsageError):
    """A stored study's name that cannot name a folder: a shared storage may hold any name."""


def study_folder(name: str) -> str:
    """A study's name as the one folder name it becomes (trials/NAME, reports/NAME, best/NAME); specs
    allow only such names, but a storage written by other means may hold any."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0") or len(name.encode()) > NAME_MAX:
        raise UnsafeStudyName(f"study {name!r}: its name is not one plain folder name ('.', '..', a '/' or over "
                              f"{NAME_MAX} bytes), so no file is written under it; copy the study to a plain "
                              "name (optuna copy-study) to work with it here")
    return name


@dataclass(frozen=True)
class Stores:
    runs_dir: Path
    storage_url: str                 # Optuna RDB storage URL
    tracking_uri: str                # MLflow tracking URI
    artifact_location: str | None    # for experiments the harness creates; None: the tracking server decides
    # How each was given, for messages: the option, its environment variable, or the runs folder's.
    storage_given_as: str = "--storage"
    tracking_given_as: str = "--tracking-uri"
    runs_given_as: str = "--runs-dir"

    def trial_dir(self, study: str, trial_number: int) -> Path:
        return self.runs_dir / TRIALS_DIR / study_folder(study) / trial_name(trial_number)

    def store_label(self, url: str) -> str:
        """How the store at `url` was given: `--storage URL`, or `--runs-dir DIR` for the embedded default."""
        given = self.storage_given_as if url == self.storage_url else self.tracking_given_as
        return f"{given} {self.runs_dir}" if given == self.runs_given_as else f"{given} {mask_secrets(url)}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a `sqlite:///` URL (None for other URLs)."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///").split("?", 1)[0])


def journal_path(url: str) -> Path | None:
    """The file behind a `journal:PATH` storage (Optuna's journal storage; None for other URLs);
    `journal:///abs/path` is read as `/abs/path`."""
    if not url.startswith("journal:"):
        return None
    path = url.removeprefix("journal:")
    return Path(path.removeprefix("//") if path.startswith("///") else path)


def store_file(url: str) -> Path | None:
    """The file an embedded storage lives in (SQLite or journal); None for a database server."""
    return sqlite_path(url) or journal_path(url)


def _sqlite_url(path: Path) -> str:
    # pysqlite reads `timeout` from the URL; MLflow and Optuna pass URLs through to SQLAlchemy.
    return f"sqlite:///{path.resolve()}?timeout={SQLITE_BUSY_TIMEOUT}"


def _given(value: str | Path | None, option: str, variable: str) -> tuple[str | None, str]:
    """An option's value and how it was given: the option itself, else its environment variable."""
    if value:
        return str(value), option
    return os.environ.get(variable) or None, f"${variable}"


def resolve_stores(runs_dir: str | Path | None = None, storage: str | None = None,
                   tracking_uri: str | None = None) -> Stores:
    """Options win over environment variables, which win over the embedded defaults under runs_dir. A
    storage or tracking URL that cannot be used is a UsageError naming the option (or variable)."""
    runs_text, runs_given = _given(runs_dir, "--runs-dir", "HARNESS_RUNS_DIR")
    runs_given = runs_given if runs_text else "--runs-dir"
    runs = Path(runs_text or DEFAULT_RUNS_DIR).resolve()
    given_storage, storage_given = _given(storage, "--storage", "HARNESS_STORAGE")
    given_tracking, tracking_given = _given(tracking_uri, "--tracking-uri", "MLFLOW_TRACKING_URI")
    if given_storage:
        check_storage_url(given_storage, storage_given)
    if given_tracking:
        check_tracking_uri(given_tracking, tracking_given)
    storage_url = given_storage or _sqlite_url(runs / OPTUNA_DB)
    tracking = given_tracking or _sqlite_url(runs / MLFLOW_DB)
    local_tracking = not tracking.startswith(("http://", "https://", "databricks"))
    artifacts = (runs / ARTIFACTS_DIR).as_uri() if local_tracking else None
    return Stores(runs, storage_url, tracking, artifacts, storage_given if given_storage else runs_given,
                  tracking_given if given_tracking else runs_given, runs_given)


def check_store_files(stores: Stores) -> None:
    """The embedded stores' files (SQLite) that exist must read as databases: told before anything
    opens, let alone writes, either store."""
    for url in (stores.storage_url, stores.tracking_uri):
        path = sqlite_path(url)
        if path is not None:
            check_sqlite_file(path, stores.store_label(url))


def reading_url(url: str) -> str:
    """The URL a reader opens a SQLite store by: as given, or read-only where its folder takes no file."""
    path = sqlite_path(url)
    return read_only_url(path) if path is not None and not writable_folder(path) else url


def holds_no_store(url: str) -> bool:
    """True for a SQLite or journal storage whose file does not exist, or a SQLite file that is empty:
    reading it must not create it (nor the tables in it)."""
    path = store_file(url)
    if path is None or not path.is_file():
        return path is not None
    return sqlite_path(url) is not None and path.stat().st_size == 0


def prepare_sqlite(url: str) -> None:
    """Create the folder of a SQLite store and switch it to WAL, so readers never block the writer.

    WAL is a property of the database file: setting it once (under a lock, since
    several workers may start together) covers every later connection.
    """
    path = sqlite_path(url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with store_lock(url):
        connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()


def store_lock(url: str) -> AbstractContextManager:
    """A lock that serialises schema creation of a fresh store across processes: workers started
    together would otherwise race to create the same tables. A file lock beside a SQLite or journal
    store, an advisory lock on a PostgreSQL server; an MLflow server migrates its own store."""
    path = store_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not `<journal>.lock`: Optuna's journal takes that name for its own lock on every write
        # (a symbolic link), and would wait out its 30 s stale-lock period behind a file left there.
        return FileLock(str(path) + ".harness-lock", timeout=SQLITE_BUSY_TIMEOUT)
    if url.startswith("postgresql"):
        return _postgres_lock(url)
    return nullcontext()


@contextmanager
def _postgres_lock(url: str) -> Iterator[None]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    key = zlib.crc32(b"harness schema") & 0x7FFFFFFF
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT})
    try:
        try:
            connection = engine.connect()
        except OperationalError as err:
            raise StoreUnavailable(f"{mask_secrets(url)}: cannot connect ({connection_failure(err)})") from None
        with connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def check_tracking_server(uri: str, given_as: str = "--tracking-uri") -> None:
    """Fail fast, in one line, when no MLflow server answers at an http(s) tracking URI, or no database
    server at a database one (MLflow's own client retries for minutes before it gives up)."""
    if uri.startswith(("postgresql", "mysql", "mssql")):
        _check_database_server(uri, given_as)
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=CONNECT_TIMEOUT) as response:
            response.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise StoreUnavailable(f"{given_as} {mask_secrets(uri)}: no MLflow server answers ({reason})") from None


def _check_database_server(url: str, given_as: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    timeout = {"connect_timeout": CONNECT_TIMEOUT} if url.startswith(("postgresql", "mysql")) else {}
    engine = create_engine(url, poolclass=NullPool, connect_args=timeout)
    try:
        with engine.connect():
            pass
    except OperationalError as err:
        raise StoreUnavailable(f"{given_as} {mask_secrets(url)}: cannot connect ({connection_failure(err)})") from None
    finally:
        engine.dispose()


def connection_failure(err: Exception) -> str:
    """The first line of what the database driver said (SQLAlchemy wraps it in `orig`), without passwords."""
    lines = str(getattr(err, "orig", None) or err).strip().splitlines()
    return mask_secrets(lines[0]) if lines else type(err).__name__
