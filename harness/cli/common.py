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

from models.errors import HarnessError

from harness.errors import UsageError

if TYPE_CHECKING:
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
    """Write the traceback of a bug where the user can find it: $HARNESS_CACHE_DIR/logs/."""
    from harness.worker.datasets import cache_root

    folder = cache_root() / "logs"
    path = folder / f"crash-{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(f"harness {' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(err)))
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
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
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


def stores_from_options(runs_dir: Path | None, storage: str | None, tracking_uri: str | None) -> Stores:
    """The stores the --runs-dir, --storage and --tracking-uri options (or their defaults) name."""
    from harness.store.locations import resolve_stores

    return resolve_stores(runs_dir, storage, tracking_uri)


def study_name(study: str) -> str:
    """A study name; a spec file path or shipped spec name maps to the name inside the spec."""
    from harness.spec import available_studies, load_study_spec

    if study.endswith((".yaml", ".yml")) or study in available_studies():
        return load_study_spec(study).name
    return study
