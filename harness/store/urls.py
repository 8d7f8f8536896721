"""The storage and tracking URLs a user gives: checked before anything opens them, and never shown with
their password (messages, crash logs, the lines a sweep prints)."""
from __future__ import annotations

import re

from harness.errors import UsageError

# Optuna's RDB storage is tested on these SQLAlchemy backends; `journal:PATH` is its journal file.
STORAGE_BACKENDS = ("sqlite", "postgresql", "mysql")
# What MLflow's client can log to: its SQL store on these backends, a server, or Databricks.
TRACKING_BACKENDS = ("sqlite", "postgresql", "mysql", "mssql")
TRACKING_SCHEMES = ("http", "https", "databricks")
# user:password@ after a scheme, and a password=... query parameter (libpq's): the password is masked.
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")
_PASSWORD_PARAMETER = re.compile(r"(?P<head>[?&]password=)[^&\s]*", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    text = _CREDENTIALS.sub(lambda match: f"{match['head']}***@", text)
    return _PASSWORD_PARAMETER.sub(lambda match: f"{match['head']}***", text)


def check_storage_url(url: str, given_as: str) -> None:
    """A UsageError naming `given_as` (--storage or $HARNESS_STORAGE) unless `url` is a journal file or a
    database URL whose SQLAlchemy driver is installed."""
    if url.startswith("journal:"):
        if not url.removeprefix("journal:").strip("/"):
            raise UsageError(f"{given_as} {url}: names no file; write journal:PATH")
        return
    backend = _database_backend(url, given_as)
    if backend not in STORAGE_BACKENDS:
        raise UsageError(f"{given_as} {mask_secrets(url)}: Optuna cannot store studies in {backend}; use "
                         "sqlite:///PATH, postgresql://USER@HOST/DB, mysql://... or journal:PATH")


def check_tracking_uri(uri: str, given_as: str) -> None:
    """A UsageError naming `given_as` (--tracking-uri or $MLFLOW_TRACKING_URI) unless MLflow can log to `uri`."""
    scheme = uri.partition(":")[0].lower() if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", uri) else ""
    if scheme in TRACKING_SCHEMES:
        return
    hint = "use sqlite:///PATH, a database URL (postgresql://USER@HOST/DB) or http(s)://HOST:PORT of an MLflow server"
    if not scheme:
        raise UsageError(f"{given_as} {mask_secrets(uri)}: not a URI; {hint}")
    backend = _database_backend(uri, given_as)
    if backend not in TRACKING_BACKENDS:
        raise UsageError(f"{given_as} {mask_secrets(uri)}: MLflow cannot track runs in {backend}; {hint}")


def _database_backend(url: str, given_as: str) -> str:
    """The SQLAlchemy backend of a database URL (sqlite, postgresql, ...), once its driver imports."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = mask_secrets(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        raise UsageError(f"{given_as} {shown}: cannot be read as a URL ({str(err).splitlines()[0]})") from None
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        scheme = parsed.drivername
        raise UsageError(f"{given_as} {shown}: unknown scheme {scheme!r} (no SQLAlchemy dialect or driver of "
                         "that name)") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise UsageError(f"{given_as} {shown}: its database driver is not installed ({err}); install it "
                         "(PostgreSQL's: pip install -e '.[postgres]')") from None
    return parsed.get_backend_name()
