"""Opening a study's Optuna storage: RDB (SQLite, PostgreSQL) or a journal file, with heartbeats for a
worker. Light on purpose: the read-only commands (studies, report, best, ui) import this, never torch."""
from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Callable

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial

from harness.errors import UsageError
from .journal import HeartbeatJournalStorage
from .locations import (CONNECT_TIMEOUT, SQLITE_BUSY_TIMEOUT, NoStore, Stores, StoreUnavailable, connection_failure,
                        holds_no_store, journal_path, prepare_sqlite, reading_url, sqlite_path, store_file, store_lock)
from .sqlite_files import BadStoreFile, check_sqlite_file

# A worker's heartbeat; a RUNNING trial silent for the grace period is failed and re-queued.
# $HARNESS_HEARTBEAT_SECONDS and $HARNESS_GRACE_SECONDS override them (every worker should agree).
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30
# A worker with nothing left to run looks at the study this often, so that it leaves within this long of the
# others' last trial (and takes up a dead worker's trial this soon after its grace period).
IDLE_POLL_SECONDS = 2


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


def idle_poll_seconds() -> int:
    """How long a worker with nothing to run sleeps between looks at the study."""
    interval, _ = heartbeat_settings()
    return min(interval, IDLE_POLL_SECONDS)


def open_storage(stores: Stores, on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> BaseStorage:
    """Optuna's RDB storage, or its journal storage for a `journal:PATH` URL. A worker passes
    `on_stale`: its trials then send heartbeats, a trial whose worker went silent is failed and handed
    to `on_stale`, and the store is created where there is none. Readers pass nothing: they create no
    store, take no lock and write nothing, so a store in a read-only folder reads as well."""
    reading = on_stale is None
    url, label = stores.storage_url, stores.store_label(stores.storage_url)
    if reading and holds_no_store(url):
        raise NoStore(f"{label}: holds no study store (no {store_file(url)}); a sweep creates one "
                      "(harness sweep --study NAME)")
    heartbeat: dict = {}
    if not reading:
        interval, grace = heartbeat_settings()
        heartbeat = {"heartbeat_interval": interval, "grace_period": grace}
    # The first worker creates the tables (or the journal); the others wait for it.
    lock = nullcontext() if reading else store_lock(url)
    journal = journal_path(url)
    if journal is not None:
        with lock:
            try:
                return HeartbeatJournalStorage(journal, **heartbeat, on_stale=on_stale)
            except OSError as err:
                raise StoreUnavailable(f"{label}: cannot open ({err.strerror or err})") from None
    if sqlite_path(url) is not None:
        check_sqlite_file(sqlite_path(url), label)
        engine_kwargs: dict = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    if reading:
        url = reading_url(url)
    else:
        heartbeat["heartbeat_stale_trial_callback"] = on_stale
        prepare_sqlite(url)
    with lock:
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
        except sqlalchemy.exc.OperationalError as err:
            raise StoreUnavailable(f"{label}: cannot open ({connection_failure(err)})") from None
        except sqlalchemy.exc.DatabaseError as err:     # a file that passed the header's checks, damaged within
            raise BadStoreFile(f"{label}: cannot be read as a study store ({connection_failure(err)})") from None
