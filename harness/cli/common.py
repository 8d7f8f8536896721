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
from models.errors import HarnessError

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


def check_worker_options(pack: int | None, checkpoint_every: int, workers: int) -> None:
    if pack is not None and pack < 1:
        raise UsageError(f"--pack must be >= 1, got {pack}")
    if checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")


def as_local_workers(command: str, workers: int, given: dict[str, Any]) -> None:
    """Run this command line again in `workers` processes (the options `given` passed on) and exit with
    their status."""
    from harness.worker.processes import run_workers

    args = [str(v) for flag, value in given.items() if value is not None and value is not False
            for v in ((flag,) if value is True else (flag, value))]
    sys.exit(run_workers(command, args, workers, echo))


def run_worker(study: str, work: Callable[[Any], Any]) -> Any:
    """`work(stop_signals)` as a worker: a SweepError is one line and status 1; a stop signal or Ctrl-C
    leaves the running trial queued again and exits with the signal's status."""
    from harness.errors import SweepError
    from harness.worker.signals import StopRequested, StopSignals

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
