"""`harness ui`: the MLflow UI over the runs directory's tracking store."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from .common import echo, friendly_errors, store_options, stores_from_options


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the UI listens on.")
@click.option("--port", default=5000, show_default=True, help="Port of the UI.")
@store_options
@friendly_errors
def ui(host: str, port: int, runs_dir: Path | None, storage: str | None, tracking_uri: str | None) -> None:
    """Start the MLflow UI on the runs directory's tracking store and print its URL (Ctrl-C stops it)."""
    stores = stores_from_options(runs_dir, storage, tracking_uri)
    if stores.tracking_uri.startswith(("http://", "https://")):
        echo(f"the tracking server serves its own UI: {stores.tracking_uri}")
        return
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", stores.tracking_uri,
               "--host", host, "--port", str(port)]
    if stores.artifact_location:
        command += ["--default-artifact-root", stores.artifact_location]
    echo(f"MLflow UI: http://{host}:{port}  (store {stores.tracking_uri}; Ctrl-C stops it)")
    sys.exit(_serve_until_stopped(command))


def _serve_until_stopped(command: list[str]) -> int:
    """Run the MLflow UI in its own process group and stop that whole group (the UI starts uvicorn
    and job workers of its own) on Ctrl-C or SIGTERM, so no server outlives `harness ui`."""
    process = subprocess.Popen(command, start_new_session=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return process.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)   # whatever the UI's own children left running
        process.wait()
        return 0
