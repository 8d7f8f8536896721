"""`harness ui`: the MLflow UI over the runs directory's tracking store, and a link per study that opens
it on the study's trials compared side by side."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path

import click

from harness.errors import UsageError

from .checks import check_port_free
from .common import echo, friendly_errors, store_options, stores_from_options

# Seconds to wait for the UI to answer before opening a browser on it (its start takes a few).
READY_SECONDS = 120


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the UI listens on.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True, help="Port of the UI.")
@click.option("--study", default=None, help="Open this study's trials in a browser, where this machine has one.")
@store_options
@friendly_errors
def ui(host: str, port: int, study: str | None, runs_dir: Path | None, storage: str | None,
       tracking_uri: str | None) -> None:
    """Start the MLflow UI on the runs directory's tracking store (Ctrl-C stops it) and print, for each
    study, the link that opens it on the study's trials side by side, best final PSNR first."""
    from harness.store.locations import holds_no_store, mask_secrets, sqlite_path
    from harness.store.ui_views import study_views

    stores = stores_from_options(runs_dir, storage, tracking_uri, write_tracking=True)
    server = stores.tracking_uri.startswith(("http://", "https://"))
    if not server and holds_no_store(stores.tracking_uri) and holds_no_store(stores.storage_url):
        raise UsageError(f"{stores.store_label(stores.tracking_uri)}: holds no study store (no "
                         f"{sqlite_path(stores.tracking_uri)}); run a sweep there first, or point "
                         f"{stores.runs_given_as} at the folder that holds one")
    if not server:
        check_port_free(host, port)
    views = [] if not server and holds_no_store(stores.tracking_uri) else study_views(stores)
    if study is not None and study not in {view.study for view in views}:
        known = ", ".join(sorted({view.study for view in views})) or "none"
        raise UsageError(f"--study {study}: no MLflow runs of that study in {stores.store_label(stores.tracking_uri)} "
                         f"(studies there: {known})")
    address = mask_secrets(stores.tracking_uri).rstrip("/") if server else f"http://{_link_host(host)}:{port}"
    for view in views:
        click.echo(f"{view.study}{' (confirmation)' if view.role == 'confirmation' else ''}: {address}/{view.path}")
    opening = next((f"{address}/{v.path}" for v in views if v.study == study and v.role == "trial"), None)
    if server:
        echo(f"the tracking server serves its own UI: {address}")
        if opening:
            webbrowser.open(opening)
        return
    # The store's URI goes to the server in its environment: on its command line, anyone could read it.
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": stores.tracking_uri}
    if stores.artifact_location:
        env["MLFLOW_DEFAULT_ARTIFACT_ROOT"] = stores.artifact_location
    echo(f"MLflow UI: http://{host}:{port}  (store {mask_secrets(stores.tracking_uri)}; Ctrl-C stops it)")
    command = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port)]
    sys.exit(_serve_until_stopped(command, env, f"http://{_link_host(host)}:{port}/health", opening))


def _link_host(host: str) -> str:
    """Where a browser on this machine reaches a server listening on `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host


def _serve_until_stopped(command: list[str], env: dict[str, str], health: str, opening: str | None) -> int:
    """Run the MLflow UI in its own process group, open a browser on `opening` once it answers, and stop
    that whole group (the UI starts uvicorn and job workers of its own) on Ctrl-C or SIGTERM, so no
    server outlives `harness ui`."""
    process = subprocess.Popen(command, env=env, start_new_session=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        if opening and _answers(health, process):
            webbrowser.open(opening)
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


def _answers(health: str, process: subprocess.Popen) -> bool:
    """Whether the server answers at `health` before it exits or READY_SECONDS pass."""
    deadline = time.monotonic() + READY_SECONDS
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(health, timeout=5) as response:
                return response.status == 200
        time.sleep(0.5)
    return False
