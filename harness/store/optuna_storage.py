"""Opening a study's Optuna storage: RDB (SQLite, PostgreSQL) or a journal file, with heartbeats for a
worker. Light on purpose: the read-only commands (studies, report, best, ui) import this, never torch."""
from __future__ import annotations

import os
from typing import Callable

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial

from harness.errors import UsageError
from .journal import HeartbeatJournalStorage
from .locations import (CONNECT_TIMEOUT, SQLITE_BUSY_TIMEOUT, Stores, StoreUnavailable, connection_failure,
                     journal_path, prepare_sqlite, safe_url, store_lock)

# A worker's heartbeat; a RUNNING trial silent for the grace period is failed and re-queued.
# $HARNESS_HEARTBEAT_SECONDS and $HARNESS_GRACE_SECONDS override them (every worker should agree).
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds, from the environment or the defaults."""
    values = []
    for name, default in (("HARNESS_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS), ("HARNESS_GRACE_SECONDS", GRACE_SECONDS)):
        text = os.environ.get(name, str(default))
        if not text.isdigit() or int(text) < 1:
            raise UsageError(f"${name} must be a whole number of seconds >= 1, got {text!r}")
        values.append(int(text))
    interval, grace = values
    if grace <= interval:
        raise UsageError(f"$HARNESS_GRACE_SECONDS ({grace}) must exceed $HARNESS_HEARTBEAT_SECONDS ({interval}), "
                         "or live trials would be taken for dead ones")
    return interval, grace


def open_storage(stores: Stores, on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> BaseStorage:
    """Optuna's RDB storage, or its journal storage for a `journal:PATH` URL. A worker passes
    `on_stale`: its trials then send heartbeats, and a trial whose worker went silent is failed and
    handed to `on_stale` (readers pass nothing)."""
    heartbeat: dict = {}
    if on_stale is not None:
        interval, grace = heartbeat_settings()
        heartbeat = {"heartbeat_interval": interval, "grace_period": grace}
    journal = journal_path(stores.storage_url)
    if journal is not None:
        with store_lock(stores.storage_url):
            try:
                return HeartbeatJournalStorage(journal, **heartbeat, on_stale=on_stale)
            except OSError as err:
                raise StoreUnavailable(f"--storage {stores.storage_url}: cannot open ({err.strerror or err})") from None
    if on_stale is not None:
        heartbeat["heartbeat_stale_trial_callback"] = on_stale
    prepare_sqlite(stores.storage_url)
    if stores.storage_url.startswith("sqlite"):
        engine_kwargs: dict = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if stores.storage_url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    with store_lock(stores.storage_url):    # the first worker creates the tables; the others wait for it
        try:
            return RDBStorage(stores.storage_url, engine_kwargs=engine_kwargs, **heartbeat)
        except sqlalchemy.exc.OperationalError as err:
            raise StoreUnavailable(f"--storage {safe_url(stores.storage_url)}: "
                                   f"cannot open ({connection_failure(err)})") from None
