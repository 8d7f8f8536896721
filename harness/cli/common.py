"""What every `harness` command shares: one-line errors, a clear line for bugs, messages on stderr."""
from __future__ import annotations

import datetime
import functools
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from harness.errors import UsageError
from harness.store.urls import mask_secrets
from models.errors import HarnessError

from .checks import check_device, check_path_length, file_to_write, folder_to_write

if TYPE_CHECKING:
    from harness.spec import StudySpec
    from harness.store.locations import Stores

def echo(message: str) -> None:
    click.echo(message, err=True)


def debugging() -> bool:
    """`harness --debug ...` or HARNESS_DEBUG=1: show tracebacks of bugs."""
    context = click.get_current_context(silent=True)
    root = context.find_root() if context else None
    return bool(root and root.params.get("debug")) or os.environ.get("HARNESS_DEBUG", "") not in ("", "0")


def quiet_libraries() -> None:
    """What the sweep commands do to Optuna's and MLflow's own output, once, at the command's start
    (never at import): the harness prints its own line per trial."""
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # Heartbeats and retry history are marked experimental in Optuna 5; the harness relies on them knowingly.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")   # noise in a log
    # `import mlflow` resets its loggers' levels from this variable, so a level set on the logger
    # before that import is lost; the variable holds whenever mlflow is first imported.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def crash_log(err: BaseException) -> Path | None:
    """Write the traceback of a bug where the user can find it: $HARNESS_CACHE_DIR/logs/, readable by its
    owner only and with every URL's password masked (a command line may hold one)."""
    from harness.worker.datasets import cache_root

    folder = cache_root() / "logs"
    path = folder / f"crash-{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    text = mask_secrets(f"harness {' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(err)))
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as log:
            log.write(text)
    except OSError:
        return None
    return path


def friendly_errors(command: Callable) -> Callable:
    """A HarnessError (bad input or environment) becomes one line on stderr and exit status 2. Anything
    else is a bug: one line that says so and where its traceback is (shown with --debug), exit status 1."""
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except HarnessError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as err:   # a bug: never passed off as the user's mistake
            if debugging():
                traceback.print_exc()
            log = crash_log(err)
            where = f"the traceback is in {log}" if log else "the traceback could not be written"
            first = mask_secrets(str(err).strip().splitlines()[0]) if str(err).strip() else ""
            click.echo(f"bug: {type(err).__name__}{': ' + first if first else ''} ({where}; "
                       "--debug or HARNESS_DEBUG=1 prints it); please report it", err=True)
            sys.exit(1)
    return wrapper


def store_options(command: Callable) -> Callable:
    """Where the studies live: the runs directory, or an Optuna storage URL and an MLflow tracking URI."""
    options = [
        click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder of the embedded stores (optuna.db, mlflow.db, mlartifacts/, trials/) "
                          "[default: $HARNESS_RUNS_DIR or ./harness-runs]."),
        click.option("--storage", default=None,
                     help="Optuna storage URL, e.g. postgresql://user:pw@host/db "
                          "[default: $HARNESS_STORAGE or sqlite in --runs-dir]."),
        click.option("--tracking-uri", default=None,
                     help="MLflow tracking URI, e.g. http://host:5000 "
                          "[default: $MLFLOW_TRACKING_URI or sqlite in --runs-dir]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def stores_from_options(runs_dir: Path | None, storage: str | None, tracking_uri: str | None, *,
                        write_storage: bool = False, write_tracking: bool = False) -> Stores:
    """The stores the --runs-dir, --storage and --tracking-uri options (or their defaults) name, checked
    before anything opens them: URLs that can be used, store files that read as databases and, for the
    stores a command writes, embedded files (SQLite, journal) it can write or create."""
    from harness.store.locations import check_store_files, resolve_stores, sqlite_path, store_file

    stores = resolve_stores(runs_dir, storage, tracking_uri)
    check_path_length(stores.runs_dir, stores.runs_given_as)
    check_store_files(stores)
    for writes, path, given_as in ((write_storage, store_file(stores.storage_url), stores.storage_given_as),
                                   (write_tracking, sqlite_path(stores.tracking_uri), stores.tracking_given_as)):
        if writes and path is not None:
            file_to_write(path, given_as)
    return stores


def study_spec(study: str) -> StudySpec:
    """The spec that --study names (a shipped spec's name or a file's path)."""
    from harness.spec import load_study_spec

    check_path_length(Path(study), "--study")
    return load_study_spec(study)


def study_name(study: str) -> str:
    """A study name; a spec file path or shipped spec name maps to the name inside the spec."""
    from harness.spec import available_studies

    check_path_length(Path(study), "--study")
    if study.endswith((".yaml", ".yml")) or study in available_studies():
        return study_spec(study).name
    return study


def worker_options(command: Callable) -> Callable:
    """How a worker trains: the device, the seed, packing, checkpoint uploads, local worker processes."""
    options = [
        click.option("--device", default="auto", show_default=True,
                     help="Torch device of the trials: auto, cpu, cuda, ..."),
        click.option("--seed", type=int, default=None,
                     help="Seed of the sampler and of every trial's training [default: the spec's]."),
        click.option("--pack", type=int, default=None,
                     help="Train up to this many models as one batched model: a trial's seeds, and several trials "
                          "at once (pack // seeds of them) [default: the spec's pack, else 1]. Slower on a CPU "
                          "(BENCHMARKS.md, Packing); meant for GPUs."),
        click.option("--checkpoint-every", type=int, default=1, show_default=True,
                     help="Upload each trial's checkpoint to its MLflow run after every this many epochs (0: only "
                          "when it ends), so that a retry on a worker that shares no runs folder resumes from it."),
        click.option("--workers", type=int, default=1, show_default=True,
                     help="Worker processes on this machine, sharing its cores (threads per worker = cores / N); "
                          "their output is merged, and Ctrl-C or SIGTERM stops them all."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def check_worker_options(pack: int | None, checkpoint_every: int, workers: int, device: str) -> None:
    if pack is not None and pack < 1:
        raise UsageError(f"--pack must be >= 1, got {pack}")
    if checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    check_device(device)     # before the first trial, which would fail on it, and the next ones


def worker_stores(runs_dir: Path | None, storage: str | None, tracking_uri: str | None) -> Stores:
    """The stores of a worker (sweep, confirm), which writes them and its trials' folders in the runs folder."""
    stores = stores_from_options(runs_dir, storage, tracking_uri, write_storage=True, write_tracking=True)
    folder_to_write(stores.runs_dir, stores.runs_given_as)
    return stores


def as_local_workers(command: str, workers: int, given: dict[str, Any], stores: Stores) -> None:
    """Run this command line again in `workers` processes (the options `given` passed on, the stores in
    their environment: a URL on a command line is there for anyone to read) and exit with their status."""
    from harness.worker.processes import run_workers

    args = [str(v) for flag, value in given.items() if value is not None and value is not False
            for v in ((flag,) if value is True else (flag, value))]
    env = {"HARNESS_RUNS_DIR": str(stores.runs_dir), "HARNESS_STORAGE": stores.storage_url,
           "MLFLOW_TRACKING_URI": stores.tracking_uri}
    sys.exit(run_workers(command, args, workers, echo, env))


def run_worker(study: str, work: Callable[[Any], Any]) -> Any:
    """`work(stop_signals)` as a worker: a SweepError is one line and status 1; a stop signal or Ctrl-C
    leaves the running trial queued again and exits with the signal's status. A console that closes
    (its launcher died, a dropped session) loses the worker's lines, never its trial."""
    from harness.errors import SweepError
    from harness.outputs.console import losable_console
    from harness.worker.signals import StopRequested, StopSignals

    with losable_console():
        try:
            with StopSignals() as stop:
                return work(stop)
        except SweepError as err:
            echo(f"error: {err}")
            sys.exit(1)
        except (KeyboardInterrupt, StopRequested) as err:
            reason = str(err) if isinstance(err, StopRequested) else "interrupted"
            echo(f"\n{reason}: the running trial is recorded as failed and queued again; run the same "
                 f"command to continue study {study}")
            sys.exit(err.exit_status if isinstance(err, StopRequested) else 130)
