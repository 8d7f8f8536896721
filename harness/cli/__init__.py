"""`harness`: train, generate and sweep conditional-VAE video predictors.

Each command lives in its own module and only parses, calls, prints; the work is done in the
packages below (spec, store, worker, outputs, report)."""
from __future__ import annotations

import click

from . import confirm, data, generate, studies, sweep, train, ui


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
