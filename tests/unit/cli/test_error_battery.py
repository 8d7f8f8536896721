"""A battery of a new user's mistakes, one command line each, against a scratch folder of real stores
(a runs folder with an Optuna and an MLflow store, a regular file where a folder is wanted, damaged
stores, a checkpoint): each must be one line, "error: ...", exit status 2, naming the option or file at
fault, no password in it, told before any work starts (nothing in the scratch folder changes)."""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import optuna
import pytest
import torch
from click.testing import CliRunner

import harness.cli.ui
from harness.cli import main
from harness.store.locations import MLFLOW_DB, OPTUNA_DB
from models.records import LAST_CHECKPOINT
from models.trainer import Trainer
from sweep_helpers import write_spec

TINY = ["--f-dim", "16", "--l-dim", "8", "--n-dim", "4", "--d-out-dim", "16", "--train-vi-len", "8",
        "--val-vi-len", "24", "--batch-size", "4", "--partial", "0.5", "--epochs", "1"]
SECRET = "PW-s3cr3t"
LONG = "n" * 300       # longer than any file system's names


@dataclass(frozen=True)
class Scratch:
    """The scratch folder's parts, for the cases' command lines."""
    root: Path
    runs: Path          # a runs folder: the 2026-12 Optuna store (studies legacy, legacy_seeds), an MLflow store
    file: Path          # a regular file, where the cases want folders
    data: Path          # the tiny data set
    ckpt: Path          # a trained checkpoint
    empty: Path         # an empty file
    spec: Path          # a study spec on the tiny data
    nowhere: Path       # a folder that does not exist
    shared: Path        # a runs folder whose store holds a study named ../../x (written by other means)


@dataclass(frozen=True)
class Case:
    id: str
    args: Callable[[Scratch], list]
    named: tuple[str, ...]                  # what the one line must name
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Scratch], None] = lambda scratch: None


def garbage(name: str) -> Callable[[Scratch], None]:
    return lambda s: (s.runs / name).write_bytes(b"this is not a database\n" * 10)


def truncated(name: str) -> Callable[[Scratch], None]:
    def cut(s: Scratch) -> None:
        data = (s.runs / name).read_bytes()
        (s.runs / name).write_bytes(data[: len(data) // 2])
    return cut


def spec_named(name: str) -> Callable[[Scratch], None]:
    return lambda s: write_spec(s.spec, s.data, name=name, confirm={"top": 1, "seeds": 2})


def confirmed_spec(s: Scratch) -> None:
    write_spec(s.spec, s.data, confirm={"top": 1, "seeds": 2})


def sweep(*args: str) -> Callable[[Scratch], list]:
    return lambda s: ["sweep", "--study", s.spec, "--runs-dir", s.runs, "--device", "cpu", *args]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def no_cuda(case: Case) -> object:
    return pytest.param(case, id=case.id, marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA"))


CASES = [
    # -- a path that cannot be created or written ----------------------------------------------
    Case("sweep-runs-dir-under-file", lambda s: ["sweep", "--study", s.spec, "--runs-dir", s.file / "runs"],
         ("--runs-dir", "is a file")),
    Case("confirm-runs-dir-under-file", lambda s: ["confirm", "--study", s.spec, "--runs-dir", s.file / "runs"],
         ("--runs-dir", "is a file"), setup=confirmed_spec),
    Case("train-out-under-file", lambda s: ["train", "--data", s.data, "--out", s.file / "run", *TINY], ("--out",)),
    Case("train-out-is-file", lambda s: ["train", "--data", s.data, "--out", s.file, *TINY], ("--out",)),
    Case("generate-out-under-file", lambda s: ["generate", "--ckpt", s.ckpt, "--data", s.data,
                                               "--out", s.file / "g", "--length", "3"], ("--out", "is a file")),
    Case("synth-out-under-file", lambda s: ["data", "synth", "--out", s.file / "d"], ("--out", "is a file")),
    Case("report-csv-under-file", lambda s: ["report", "--study", "legacy", "--runs-dir", s.runs,
                                             "--csv", s.file / "t.csv"], ("--csv",)),
    Case("report-markdown-under-file", lambda s: ["report", "--study", "legacy", "--runs-dir", s.runs,
                                                  "--markdown", s.file / "t.md"], ("--markdown",)),
    Case("report-html-out-under-file", lambda s: ["report", "--study", "legacy", "--runs-dir", s.runs, "--html",
                                                  "--out", s.file / "r"], ("--out", "is a file")),
    Case("best-out-under-file", lambda s: ["best", "--study", "legacy", "--runs-dir", s.runs, "--export", "ckpt",
                                           "--out", s.file / "b"], ("--out", "is a file")),
    Case("journal-under-file", lambda s: ["sweep", "--study", s.spec, "--runs-dir", s.root / "fresh",
                                          "--storage", f"journal:{s.file}/study.log"], ("--storage", "is a file")),
    Case("studies-runs-dir-is-file", lambda s: ["studies", "--runs-dir", s.file], ("--runs-dir",)),
    Case("ui-runs-dir-under-file", lambda s: ["ui", "--runs-dir", s.file / "runs"], ("--runs-dir", "is a file")),
    # -- names too long for a file system ------------------------------------------------------
    Case("spec-name-300", lambda s: ["sweep", "--study", s.spec, "--runs-dir", s.runs],
         ("name", "at most 100"), setup=spec_named("s" * 300)),
    Case("study-argument-300", lambda s: ["sweep", "--study", LONG, "--runs-dir", s.runs], ("--study", "300 bytes")),
    Case("report-study-300-yaml", lambda s: ["report", "--study", LONG + ".yaml", "--runs-dir", s.runs],
         ("--study",)),
    Case("sweep-long-runs-dir", lambda s: ["sweep", "--study", s.spec, "--runs-dir", s.root / LONG],
         ("--runs-dir", "300 bytes")),
    Case("studies-long-runs-dir", lambda s: ["studies", "--runs-dir", s.root / LONG], ("--runs-dir",)),
    Case("synth-long-out", lambda s: ["data", "synth", "--out", s.root / LONG], ("--out",)),
    # -- a store that cannot be read as one ----------------------------------------------------
    Case("studies-optuna-db-garbage", lambda s: ["studies", "--runs-dir", s.runs], (OPTUNA_DB, "not a SQLite"),
         setup=garbage(OPTUNA_DB)),
    Case("sweep-optuna-db-garbage", sweep(), (OPTUNA_DB,), setup=garbage(OPTUNA_DB)),
    Case("report-optuna-db-garbage", lambda s: ["report", "--study", "legacy", "--runs-dir", s.runs], (OPTUNA_DB,),
         setup=garbage(OPTUNA_DB)),
    Case("best-optuna-db-garbage", lambda s: ["best", "--study", "legacy", "--runs-dir", s.runs], (OPTUNA_DB,),
         setup=garbage(OPTUNA_DB)),
    Case("studies-optuna-db-truncated", lambda s: ["studies", "--runs-dir", s.runs], (OPTUNA_DB, "cut short"),
         setup=truncated(OPTUNA_DB)),
    Case("report-optuna-db-truncated", lambda s: ["report", "--study", "legacy", "--runs-dir", s.runs],
         (OPTUNA_DB, "cut short"), setup=truncated(OPTUNA_DB)),
    Case("sweep-mlflow-db-garbage", sweep(), (MLFLOW_DB,), setup=garbage(MLFLOW_DB)),
    Case("sweep-mlflow-db-truncated", sweep(), (MLFLOW_DB, "cut short"), setup=truncated(MLFLOW_DB)),
    Case("report-html-mlflow-db-garbage", lambda s: ["report", "--study", "legacy", "--runs-dir", s.runs, "--html"],
         (MLFLOW_DB,), setup=garbage(MLFLOW_DB)),
    Case("ui-mlflow-db-garbage", lambda s: ["ui", "--runs-dir", s.runs], (MLFLOW_DB,), setup=garbage(MLFLOW_DB)),
    Case("storage-sqlite-garbage", lambda s: ["studies", "--storage", f"sqlite:///{s.file}"],
         ("--storage", "not a SQLite")),
    # -- a storage or tracking URL that cannot be used -----------------------------------------
    Case("storage-unknown-scheme", lambda s: ["studies", "--storage", f"foo://user:{SECRET}@host/db"],
         ("--storage", "foo")),
    Case("storage-unparsable", lambda s: ["studies", "--storage", "::::"], ("--storage",)),
    Case("storage-bad-port", lambda s: ["report", "--study", "x", "--storage",
                                        f"postgresql://user:{SECRET}@host:port/db"], ("--storage",)),
    Case("storage-unknown-driver", lambda s: ["sweep", "--study", s.spec, "--runs-dir", s.runs, "--storage",
                                              f"postgresql+nodriver://user:{SECRET}@host/db"], ("--storage",)),
    Case("storage-driver-missing", lambda s: ["sweep", "--study", s.spec, "--runs-dir", s.runs, "--storage",
                                              f"mysql://user:{SECRET}@host/db"], ("--storage", "driver")),
    Case("storage-from-environment", lambda s: ["studies"], ("$HARNESS_STORAGE",),
         env={"HARNESS_STORAGE": "foo://x"}),
    Case("tracking-uri-garbage", sweep("--tracking-uri", "not a uri"), ("--tracking-uri",)),
    Case("tracking-uri-unsupported", sweep("--tracking-uri", f"ftp://user:{SECRET}@host/x"), ("--tracking-uri",)),
    Case("tracking-uri-unknown-scheme", lambda s: ["ui", "--runs-dir", s.runs, "--tracking-uri", "foo://bar"],
         ("--tracking-uri", "foo")),
    Case("tracking-uri-from-environment", lambda s: ["report", "--study", "legacy", "--runs-dir", s.runs, "--html"],
         ("$MLFLOW_TRACKING_URI",), env={"MLFLOW_TRACKING_URI": "garbage"}),
    # -- a device this machine does not have ---------------------------------------------------
    no_cuda(Case("train-cuda", lambda s: ["train", "--data", s.data, "--out", s.root / "r", *TINY,
                                          "--device", "cuda"], ("--device cuda",))),
    no_cuda(Case("generate-cuda", lambda s: ["generate", "--ckpt", s.ckpt, "--data", s.data, "--out", s.root / "g",
                                             "--device", "cuda"], ("--device cuda",))),
    no_cuda(Case("sweep-cuda", sweep("--device", "cuda"), ("--device cuda",))),
    no_cuda(Case("confirm-cuda", lambda s: ["confirm", "--study", s.spec, "--runs-dir", s.runs, "--device", "cuda"],
                 ("--device cuda",), setup=confirmed_spec)),
    Case("train-mps", lambda s: ["train", "--data", s.data, "--out", s.root / "r", *TINY, "--device", "mps"],
         ("--device mps",)),
    Case("train-misspelt-device", lambda s: ["train", "--data", s.data, "--out", s.root / "r", *TINY,
                                             "--device", "cdua"], ("--device cdua",)),
    Case("generate-misspelt-device", lambda s: ["generate", "--ckpt", s.ckpt, "--data", s.data,
                                                "--out", s.root / "g", "--device", "gpu"], ("--device gpu",)),
    # -- a number out of its range -------------------------------------------------------------
    Case("synth-frames-0", lambda s: ["data", "synth", "--out", s.root / "d", "--frames", "0"], ("--frames",)),
    Case("synth-height-0", lambda s: ["data", "synth", "--out", s.root / "d", "--height", "0"], ("--height",)),
    Case("synth-train-videos-negative", lambda s: ["data", "synth", "--out", s.root / "d", "--train-videos", "-1"],
         ("--train-videos",)),
    Case("synth-seed-negative", lambda s: ["data", "synth", "--out", s.root / "d", "--seed", "-1"], ("--seed",)),
    Case("generate-samples-negative", lambda s: ["generate", "--ckpt", s.ckpt, "--data", s.data,
                                                 "--out", s.root / "g", "--samples", "-1"], ("--samples",)),
    Case("generate-samples-0", lambda s: ["generate", "--ckpt", s.ckpt, "--data", s.data, "--out", s.root / "g",
                                          "--samples", "0", "--length", "3"], ("--samples",)),
    Case("generate-length-1", lambda s: ["generate", "--ckpt", s.ckpt, "--data", s.data, "--out", s.root / "g",
                                         "--length", "1"], ("--length",)),
    Case("ui-port-70000", lambda s: ["ui", "--runs-dir", s.runs, "--port", "70000"], ("--port",)),
    Case("ui-port-negative", lambda s: ["ui", "--runs-dir", s.runs, "--port", "-1"], ("--port",)),
    Case("ui-port-0", lambda s: ["ui", "--runs-dir", s.runs, "--port", "0"], ("--port",)),
    Case("sweep-timeout-negative", sweep("--timeout", "-5"), ("--timeout",)),
    Case("sweep-timeout-0", sweep("--timeout", "0"), ("--timeout",)),
    Case("sweep-n-trials-0", sweep("--n-trials", "0"), ("--n-trials",)),
    Case("sweep-workers-0", sweep("--workers", "0"), ("--workers",)),
    Case("sweep-pack-0", sweep("--pack", "0"), ("--pack",)),
    Case("sweep-checkpoint-every-negative", sweep("--checkpoint-every", "-1"), ("--checkpoint-every",)),
    Case("sweep-heartbeat-0", sweep(), ("$HARNESS_HEARTBEAT_SECONDS",), env={"HARNESS_HEARTBEAT_SECONDS": "0"}),
    # -- files to read ---------------------------------------------------------------------------
    Case("generate-empty-checkpoint", lambda s: ["generate", "--ckpt", s.empty, "--out", s.root / "g"],
         ("--ckpt", "empty")),
    Case("generate-not-a-checkpoint", lambda s: ["generate", "--ckpt", s.spec, "--out", s.root / "g"],
         ("study.yaml",)),
    Case("generate-missing-checkpoint", lambda s: ["generate", "--ckpt", s.nowhere / "c.pt", "--out", s.root / "g"],
         ("--ckpt",)),
    # -- what used to run without a word ---------------------------------------------------------
    Case("spec-name-dotdot", sweep(), ("name", "'..'"), setup=spec_named("..")),
    Case("spec-name-dash", sweep(), ("name",), setup=spec_named("-rf")),
    Case("confirm-spec-name-dotdot", lambda s: ["confirm", "--study", s.spec, "--runs-dir", s.runs, "--device", "cpu"],
         ("name", "'..'"), setup=spec_named("..")),
    Case("best-out-without-export", lambda s: ["best", "--study", "legacy", "--runs-dir", s.runs,
                                               "--out", s.root / "b"], ("--out", "--export")),
    Case("report-out-without-html", lambda s: ["report", "--study", "legacy", "--runs-dir", s.runs,
                                               "--out", s.root / "r"], ("--out", "--html")),
    Case("ui-runs-dir-missing", lambda s: ["ui", "--runs-dir", s.nowhere], ("nowhere", "holds no study store")),
    Case("report-runs-dir-missing", lambda s: ["report", "--study", "legacy", "--runs-dir", s.nowhere],
         ("--study legacy", "no such study", "nowhere")),
    Case("best-runs-dir-missing", lambda s: ["best", "--study", "legacy", "--runs-dir", s.nowhere],
         ("--study legacy", "no such study")),
    Case("ui-unknown-study", lambda s: ["ui", "--runs-dir", s.runs, "--study", "nosuch", "--port", free_port()],
         ("--study nosuch",)),
    Case("report-html-stored-name-dotdot", lambda s: ["report", "--study", "../../x", "--runs-dir", s.shared, "--html"],
         ("../../x",)),
    Case("best-export-stored-name-dotdot", lambda s: ["best", "--study", "../../x", "--runs-dir", s.shared,
                                                      "--export", "ckpt"], ("../../x",)),
]


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under `root`, with each file's SHA-256."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            for path in sorted(root.rglob("*"))}


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_data, tmp_path_factory) -> Path:
    from models.config import TrainConfig

    folder = tmp_path_factory.mktemp("battery-run")
    config = TrainConfig(f_dim=16, l_dim=8, n_dim=4, d_out_dim=16, epochs=1, batch_size=4, train_vi_len=8,
                         val_vi_len=24, partial=0.25, device="cpu", seed=0, baselines=False)
    Trainer(config, tiny_data, folder).fit()
    return folder / "checkpoints" / LAST_CHECKPOINT


@pytest.fixture
def scratch(tmp_path, legacy_runs, migrated_mlflow_db, tiny_data_root, trained_checkpoint, monkeypatch) -> Scratch:
    for variable in ("HARNESS_STORAGE", "MLFLOW_TRACKING_URI", "HARNESS_RUNS_DIR", "HARNESS_DEBUG"):
        monkeypatch.delenv(variable, raising=False)
    shutil.copy(migrated_mlflow_db, legacy_runs / MLFLOW_DB)
    shared = tmp_path / "shared"
    shared.mkdir()
    study = optuna.create_study(study_name="../../x", storage=f"sqlite:///{shared / OPTUNA_DB}", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=20.0, user_attrs={"mlflow_run_id": "0" * 32}))
    (tmp_path / "afile").write_text("a regular file\n")
    (tmp_path / "empty.pt").touch()
    shutil.copy(trained_checkpoint, tmp_path / "last.pt")
    scratch = Scratch(tmp_path, legacy_runs, tmp_path / "afile", tiny_data_root, tmp_path / "last.pt",
                      tmp_path / "empty.pt", tmp_path / "study.yaml", tmp_path / "nowhere", shared)
    write_spec(scratch.spec, tiny_data_root)
    # `harness ui` must not start a server here: where a case fails to be caught, it returns at once.
    monkeypatch.setattr(harness.cli.ui, "_serve_until_stopped", lambda *args, **kwargs: 0)
    return scratch


def outcome(result, named: tuple[str, ...], changed: bool) -> str:
    """What a mistake got: "clean" (one line naming what is at fault, status 2, nothing changed) or what
    went wrong."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    if "Traceback" in result.output or (result.exception and not isinstance(result.exception, SystemExit)):
        return "traceback"
    if result.exit_code == 0:
        return "silent success"
    if any(line.startswith("bug:") for line in lines):
        return "bug-labelled"
    if changed:
        return "stores changed"
    if result.exit_code != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
        return "not one line with status 2"
    if SECRET in result.output:
        return "password shown"
    if not all(fragment in lines[0] for fragment in named):
        return "does not name what is at fault"
    return "clean"


@pytest.mark.parametrize("case", [c if not isinstance(c, Case) else pytest.param(c, id=c.id) for c in CASES])
def test_each_mistake_is_one_line_naming_what_is_at_fault_and_changes_nothing(case, scratch, monkeypatch):
    for variable, value in case.env.items():
        monkeypatch.setenv(variable, value)
    case.setup(scratch)
    before = tree(scratch.root)
    result = CliRunner().invoke(main, [str(arg) for arg in case.args(scratch)])
    changed = tree(scratch.root) != before
    got = outcome(result, case.named, changed)
    assert got == "clean", f"{got} (status {result.exit_code}): {result.output[-600:]}"


def test_a_busy_port_is_named_before_the_ui_starts(scratch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["ui", "--runs-dir", str(scratch.runs), "--port", str(port)])
    assert outcome(result, (f"--port {port}", "in use"), changed=False) == "clean", result.output


@pytest.fixture
def read_only_runs(scratch) -> Iterator[Path]:
    """A copy of the scratch runs folder where nothing can be written: a read-only file system (as root,
    who may write anything else), or a folder without write permission."""
    folder = scratch.root / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        for name in (OPTUNA_DB, MLFLOW_DB):
            shutil.copy(scratch.runs / name, folder / name)
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only file system here")
    try:
        for name in (OPTUNA_DB, MLFLOW_DB):
            shutil.copy(scratch.runs / name, folder / name)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        yield folder
    finally:
        # Lazily: a reader in this process may still hold a store's file open.
        subprocess.run(["umount", "--lazy", str(folder)], check=True, capture_output=True)


@pytest.mark.parametrize("args, named", [
    (["sweep", "--study", "{spec}", "--device", "cpu"], ("--runs-dir", "cannot be written")),
    (["report", "--study", "legacy", "--html"], ("--runs-dir", "mlflow.db", "cannot be written")),
    (["best", "--study", "legacy", "--export", "ckpt"], ("--runs-dir", "mlflow.db", "cannot be written")),
], ids=["sweep", "report-html", "best-export"])
def test_commands_that_write_name_a_read_only_runs_folder(args, named, scratch, read_only_runs):
    before = tree(scratch.root)
    result = CliRunner().invoke(main, [a.format(spec=scratch.spec) for a in args] + ["--runs-dir", str(read_only_runs)])
    assert outcome(result, named, tree(scratch.root) != before) == "clean", result.output


def test_read_only_commands_read_a_read_only_runs_folder(scratch, read_only_runs):
    studies = CliRunner().invoke(main, ["studies", "--runs-dir", str(read_only_runs)])
    assert studies.exit_code == 0 and "legacy_seeds" in studies.output, studies.output
    report = CliRunner().invoke(main, ["report", "--study", "legacy", "--runs-dir", str(read_only_runs)])
    assert report.exit_code == 0 and "the search's trials" in report.output, report.output
    assert sorted(path.name for path in read_only_runs.iterdir()) == [MLFLOW_DB, OPTUNA_DB]
