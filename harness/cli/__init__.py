"""`harness`: train, generate and sweep conditional-VAE video predictors.

Each command lives in its own module and only parses, calls, prints; the work is done in the
packages below (spec, store, worker, outputs, report)."""
from __future__ import annotations

import sys
from typing import Any

import click

from . import confirm, data, generate, studies, sweep, train, ui


class OneLineErrors(click.Group):
    """The `harness` group: click's own errors (a missing option, a value out of its range) are told as
    one line naming the option, like the harness's own (common.friendly_errors), with exit status 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            status = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as err:
            context = getattr(err, "ctx", None)
            hint = f" (see {context.command_path} --help)" if isinstance(err, click.UsageError) and context else ""
            click.echo(f"error: {' '.join(err.format_message().split())}{hint}", err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        # Without standalone mode click returns what the command returned, or the status of --help's exit.
        sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="harness")
@click.option("--debug", is_flag=True, help="Print the traceback of a bug (also: HARNESS_DEBUG=1).")
def main(debug: bool) -> None:
    """Train, generate and sweep conditional-VAE video predictors.

    \b
    harness data synth --out DIR        write the built-in synthetic dance data set
    harness train --out RUN_DIR         train the CVAE (synthetic data unless --data)
    harness generate --ckpt FILE ...    roll out test pose sequences: GIF, PSNR, submission CSV
    harness sweep --study NAME          an Optuna study, each trial a training run logged to MLflow
    harness confirm --study NAME        its best configurations again on fresh seeds, raced
    harness studies | report | best     what the studies found; export the best checkpoint
    harness ui                          the MLflow UI over the runs directory
    """


# The modules keep their names (harness.cli.sweep is the module); their commands join the group here.
for _command in (data.data, train.train, generate.generate, sweep.sweep, confirm.confirm, studies.studies,
                 studies.report, studies.best, ui.ui):
    main.add_command(_command)
