"""A password in a storage or tracking URL stays out of what the harness prints and writes, and off every
command line it starts (anyone on the machine reads those)."""
from __future__ import annotations

import stat

import pytest
from click.testing import CliRunner

import harness.cli.ui
import harness.store.ui_views
import harness.worker.processes
from harness.cli import main
from harness.store.urls import mask_secrets
from servers import free_port
from sweep_helpers import write_spec

SECRET = "PW-s3cr3t"
DATABASE = f"postgresql://harness:{SECRET}@127.0.0.1:1/mlflow"


@pytest.fixture(autouse=True)
def no_store_variables(monkeypatch):
    for variable in ("HARNESS_STORAGE", "MLFLOW_TRACKING_URI", "HARNESS_RUNS_DIR", "HARNESS_DEBUG"):
        monkeypatch.delenv(variable, raising=False)


def test_every_url_s_password_is_masked_in_text():
    text = (f"--storage postgresql+psycopg://u:{SECRET}@db:5432/optuna --tracking-uri http://me:{SECRET}@mlflow:5000 "
            f"postgresql://u@db/x?sslmode=require&password={SECRET} sqlite:///runs/optuna.db")
    masked = mask_secrets(text)
    assert SECRET not in masked
    assert "postgresql+psycopg://u:***@db:5432/optuna" in masked and "http://me:***@mlflow:5000" in masked
    assert "password=***" in masked and "sqlite:///runs/optuna.db" in masked


def test_a_crash_log_masks_the_command_line_and_is_its_owner_s_only(tmp_path, monkeypatch):
    import harness.cli.studies as commands

    def broken(*args, **kwargs):
        raise ValueError(f"deep inside a library, near {DATABASE}")

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(commands, "stores_from_options", broken)
    monkeypatch.setattr("sys.argv", ["harness", "studies", "--storage", DATABASE])
    result = CliRunner().invoke(main, ["studies", "--storage", DATABASE])
    assert result.exit_code == 1 and result.output.startswith("bug: ValueError") and SECRET not in result.output
    (log,) = (tmp_path / "cache" / "logs").glob("crash-*.log")
    text = log.read_text()
    assert SECRET not in text and "postgresql://harness:***@127.0.0.1:1/mlflow" in text
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700


def test_local_workers_get_the_stores_in_their_environment_not_their_command_line(tmp_path, monkeypatch,
                                                                                   tiny_data_root):
    started = {}

    def run_workers(command, args, workers, echo, extra_env):
        started.update(command=command, args=args, workers=workers, env=extra_env)
        return 0

    monkeypatch.setattr(harness.worker.processes, "run_workers", run_workers)
    spec = write_spec(tmp_path / "pair.yaml", tiny_data_root)
    result = CliRunner().invoke(main, ["sweep", "--study", str(spec), "--workers", "2", "--device", "cpu",
                                       "--runs-dir", str(tmp_path / "runs"), "--storage", DATABASE])
    assert result.exit_code == 0, result.output
    assert started["workers"] == 2 and SECRET not in " ".join(started["args"])
    assert started["env"]["HARNESS_STORAGE"] == DATABASE
    assert started["env"]["HARNESS_RUNS_DIR"] == str(tmp_path / "runs")


def test_the_ui_gets_its_store_in_its_environment_and_prints_it_masked(tmp_path, monkeypatch):
    served = {}

    def serve(command, env, health, opening):
        served.update(command=command, env=env)
        return 0

    monkeypatch.setattr(harness.cli.ui, "_serve_until_stopped", serve)
    monkeypatch.setattr(harness.store.ui_views, "study_views", lambda stores: [])
    result = CliRunner().invoke(main, ["ui", "--runs-dir", str(tmp_path), "--tracking-uri", DATABASE,
                                       "--port", str(free_port())])
    assert result.exit_code == 0 and "postgresql://harness:***@127.0.0.1:1/mlflow" in result.output, result.output
    assert SECRET not in result.output
    assert SECRET not in " ".join(served["command"])
    assert served["env"]["MLFLOW_BACKEND_STORE_URI"] == DATABASE


def test_a_tracking_server_s_address_is_printed_masked(tmp_path, monkeypatch):
    monkeypatch.setattr(harness.store.ui_views, "study_views", lambda stores: [])
    result = CliRunner().invoke(main, ["ui", "--runs-dir", str(tmp_path),
                                       "--tracking-uri", f"http://me:{SECRET}@127.0.0.1:1"])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output and "http://me:***@127.0.0.1:1" in result.output
