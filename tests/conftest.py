"""Shared fixtures: a tiny synthetic data set and a tiny model config, so tests run in seconds on a CPU.

tests/unit/<package>/ tests one package of harness/ (or models/) in this process; tests/e2e/ runs real
processes (the CLI, workers, servers, a browser, a SLURM cluster), and every test there is `slow`."""
import contextlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from harness.worker.processes import threads_per_worker
from models.config import TrainConfig
from models.data import DanceData, load_dance_data
from models.synth import generate_dataset

# The cores are shared between the test processes (xdist's workers), a thread or more each; the harness
# processes a test starts inherit its share (more threads than cores make every process wait on the others).
THREADS = threads_per_worker(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
torch.set_num_threads(THREADS)
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(THREADS)
E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Real processes take seconds to start: `pytest -m "not slow"` leaves tests/e2e/ out."""
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    """4 training videos of 64 frames, one validation and one test video of 48 frames, 32x64."""
    root = tmp_path_factory.mktemp("tiny_data")
    generate_dataset(root, train_videos=4, val_videos=1, test_videos=1, frames=64, val_frames=48, seed=1)
    return root


@pytest.fixture(scope="session")
def tiny_data(tiny_data_root) -> DanceData:
    """tiny_data_root loaded for tiny_config's sequence lengths."""
    return load_dance_data(tiny_data_root, train_vi_len=8, val_vi_len=24)


@pytest.fixture
def tiny_config() -> TrainConfig:
    return TrainConfig(f_dim=16, l_dim=8, n_dim=4, d_out_dim=16, epochs=2, batch_size=4, train_vi_len=8,
                       val_vi_len=24, kl_anneal_type="Monotonic", tfr_sde=1, device="cpu", seed=0)


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(tmp_path_factory):
    """After the last test: no process that a test started (a server, a worker, a cluster daemon) is
    still running, also where a test failed. One that is gets killed, and the session fails naming it."""
    yield
    import signal

    from servers import POSTGRES_PREFIX, SLURM_PREFIX, stray_processes

    left = stray_processes((str(tmp_path_factory.getbasetemp()), POSTGRES_PREFIX, SLURM_PREFIX))
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind by the tests: {left}"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the synthetic-data and frame caches out of the user's home."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "harness-cache"))


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, created once: MLflow's schema migrations take seconds per store."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def runs_dir(tmp_path, migrated_mlflow_db) -> Path:
    """A runs directory whose MLflow store already has its tables (copied from the template)."""
    from harness.store.locations import MLFLOW_DB

    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copy(migrated_mlflow_db, runs / MLFLOW_DB)
    return runs


@pytest.fixture
def legacy_runs(tmp_path) -> Path:
    """A runs directory holding a copy of the Optuna store written by the 2026-12 code
    (tests/data/store-2026-12: studies legacy and legacy_seeds, v1 fingerprints, a waiting trial each)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "store-2026-12" / "optuna.db", runs / "optuna.db")
    return runs
