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

from harness.outputs.names import trial_name
from models.errors import HarnessError

DEFAULT_RUNS_DIR = "harness-runs"
OPTUNA_DB = "optuna.db"
MLFLOW_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
TRIALS_DIR = "trials"
# Seconds a SQLite connection waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT = 120
# Seconds to wait for a PostgreSQL server or an MLflow tracking server to answer before giving up.
CONNECT_TIMEOUT = 10


class StoreUnavailable(HarnessError):
    """A storage or tracking server that cannot be reached (one line naming the option)."""


@dataclass(frozen=True)
class Stores:
    runs_dir: Path
    storage_url: str                 # Optuna RDB storage URL
    tracking_uri: str                # MLflow tracking URI
    artifact_location: str | None    # for experiments the harness creates; None: the tracking server decides

    def trial_dir(self, study: str, trial_number: int) -> Path:
        return self.runs_dir / TRIALS_DIR / study / trial_name(trial_number)


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


def resolve_stores(runs_dir: str | Path | None = None, storage: str | None = None,
                   tracking_uri: str | None = None) -> Stores:
    """Options win over environment variables, which win over the embedded defaults under runs_dir."""
    runs = Path(runs_dir or os.environ.get("HARNESS_RUNS_DIR") or DEFAULT_RUNS_DIR).resolve()
    storage = storage or os.environ.get("HARNESS_STORAGE") or _sqlite_url(runs / OPTUNA_DB)
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or _sqlite_url(runs / MLFLOW_DB)
    local_tracking = not tracking_uri.startswith(("http://", "https://", "databricks"))
    artifacts = (runs / ARTIFACTS_DIR).as_uri() if local_tracking else None
    return Stores(runs, storage, tracking_uri, artifacts)


def holds_no_store(url: str) -> bool:
    """True for a SQLite or journal storage whose file does not exist: reading it must not create it."""
    path = store_file(url)
    return path is not None and not path.exists()


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
            raise StoreUnavailable(f"{safe_url(url)}: cannot connect ({connection_failure(err)})") from None
        with connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def check_tracking_server(uri: str) -> None:
    """Fail fast, in one line, when no MLflow server answers at an http(s) tracking URI
    (MLflow's own client retries for minutes before it gives up)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=CONNECT_TIMEOUT) as response:
            response.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise StoreUnavailable(f"--tracking-uri {safe_url(uri)}: no MLflow server answers ({reason})") from None


def connection_failure(err: Exception) -> str:
    """The first line of what the database driver said (SQLAlchemy wraps it in `orig`)."""
    return str(getattr(err, "orig", None) or err).strip().splitlines()[0]


def safe_url(url: str) -> str:
    """A storage URL without its password, for messages."""
    head, sep, tail = url.partition("://")
    if "@" in tail:
        credentials, _, host = tail.rpartition("@")
        tail = credentials.split(":")[0] + ":***@" + host
    return head + sep + tail
