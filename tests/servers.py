"""Real servers for the scale-out tests, on 127.0.0.1 only: PostgreSQL in a temporary folder and an
MLflow tracking server. Each is a context manager that stops its process, also when the test fails."""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

# initdb refuses to run as root; the server then runs as this unprivileged user.
POSTGRES_USER = "postgres"

# The folders of this test session's servers: named after its process, so that the end-of-session check
# for processes left behind never takes another session's servers (two may run on one machine) for ours.
POSTGRES_PREFIX = f"harness-pg-{os.getpid()}-"
SLURM_PREFIX = f"harness-slurm-{os.getpid()}-"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin(name: str) -> str | None:
    """A PostgreSQL program on PATH, else from Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def require_postgres() -> None:
    """Skip where PostgreSQL is not installed, unless $HARNESS_REQUIRE_SYSTEM_TOOLS says it must be (CI)."""
    if postgres_bin("initdb") and postgres_bin("pg_ctl"):
        return
    message = "PostgreSQL (initdb, pg_ctl) is not installed"
    if os.environ.get("HARNESS_REQUIRE_SYSTEM_TOOLS"):
        pytest.fail(message + " and $HARNESS_REQUIRE_SYSTEM_TOOLS is set")
    pytest.skip(message)


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", POSTGRES_USER, "--", *command]


@contextlib.contextmanager
def postgres_server(databases: tuple[str, ...] = ("optuna", "mlflow")) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL cluster on a free loopback port; yields a URL per database."""
    require_postgres()
    # Under /tmp rather than pytest's tmp_path: the server user must be able to reach the folder.
    folder = Path(tempfile.mkdtemp(prefix=POSTGRES_PREFIX))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        account = pwd.getpwnam(POSTGRES_USER)
        for path in (folder, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)
    port = free_port()
    pg_ctl = postgres_bin("pg_ctl")
    started = False
    try:
        _run(_as_server_user([postgres_bin("initdb"), "-D", str(data), "-U", "harness", "--auth=trust",
                              "--no-sync", "-E", "UTF8"]))
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {sockets} -c fsync=off -c max_connections=200"
        _run(_as_server_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "server.log"),
                              "-w", "-t", "60", "start"]))
        started = True
        for name in databases:
            _run(_as_server_user([postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port),
                                  "-U", "harness", name]))
        yield {name: f"postgresql://harness@127.0.0.1:{port}/{name}" for name in databases}
    finally:
        if started:
            subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
                           capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path) -> Iterator[str]:
    """`mlflow server` on a free loopback port, serving artifacts from `artifacts`; yields its URL."""
    port = free_port()
    log = open(artifacts.parent / "mlflow-server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError("mlflow server did not come up:\n" +
                                       (artifacts.parent / "mlflow-server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url
    finally:
        stop_group(process)
        log.close()


def stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process started with start_new_session=True and everything it started."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait(timeout=timeout)


def stray_processes(markers: tuple[str, ...]) -> dict[int, str]:
    """Processes, pid -> command line, that descend from this one or whose command line names one of
    `markers` (a test's temporary folders): what a test that started servers or workers left behind."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    me = os.getpid()

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == me:
                return True
        return False
    return {pid: command.strip() for pid, command in commands.items()
            if pid != me and command and (descends(pid) or any(marker in command for marker in markers))}


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
