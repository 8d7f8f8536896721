"""The read-only commands (studies, report, best, ui) never import torch or the trainer: each runs
in-process in a fresh interpreter against a real store, which then must not hold either module."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweep_helpers import harness, ok, write_spec

HEAVY = ("torch", "models.trainer")

# Runs each command line (argv[2], JSON) through the CLI in this one process, then reports the
# commands' exit codes and output and which of HEAVY got imported.
CHECK = f"""
import json, sys
from click.testing import CliRunner
import harness.cli.ui
from harness.cli import main

harness.cli.ui._serve_until_stopped = lambda *args: 0   # `harness ui` without a server
runs, commands = sys.argv[1], json.loads(sys.argv[2])
results = []
for args in commands:
    result = CliRunner().invoke(main, [*args, "--runs-dir", runs])
    results.append({{"args": args, "exit_code": result.exit_code, "output": result.output,
                    "stdout": result.stdout}})
print(json.dumps({{"results": results, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def fresh_python(*args: str) -> subprocess.CompletedProcess:
    """A new interpreter whose stores come from --runs-dir only."""
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_STORAGE", "MLFLOW_TRACKING_URI")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=env)


def run_light(runs: Path, commands: list[list[str]]) -> dict[str, dict]:
    """Each command's result by its command line; fails if the process imported torch or the trainer."""
    process = fresh_python("-c", CHECK, str(runs), json.dumps(commands))
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads(process.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [], f"read-only commands imported {report['loaded']}"
    return {" ".join(r["args"]): r for r in report["results"]}


def test_importing_the_cli_does_not_import_torch():
    process = fresh_python("-c", f"import sys, harness.cli; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.strip() == "[]"


def test_read_only_commands_on_a_stored_study_stay_light(legacy_runs, tmp_path):
    report_dir = tmp_path / "report"
    results = run_light(legacy_runs, [["studies"], ["report", "--study", "legacy"],
                                      ["report", "--study", "legacy", "--html", "--out", str(report_dir)],
                                      ["best", "--study", "legacy"], ["ui"]])
    assert results["studies"]["exit_code"] == 0
    assert "legacy" in results["studies"]["output"] and "legacy_seeds" in results["studies"]["output"]
    assert results["report --study legacy"]["exit_code"] == 0
    html = results[f"report --study legacy --html --out {report_dir}"]
    assert html["exit_code"] == 0, html["output"]
    assert "Study legacy" in (report_dir / "index.html").read_text()
    best = results["best --study legacy"]
    assert best["exit_code"] == 2 and "no completed trial yet" in best["output"]
    assert results["ui"]["exit_code"] == 0 and "MLflow UI: http://" in results["ui"]["output"]


@pytest.fixture
def swept_runs(tmp_path, tiny_data_root, runs_dir) -> Path:
    """A runs directory holding a finished two-trial study, swept in its own process (that one trains)."""
    runs = tmp_path / "runs"
    spec = write_spec(tmp_path / "light.yaml", tiny_data_root)
    ok(harness("sweep", "--study", str(spec), "--runs-dir", str(runs), "--device", "cpu"))
    return runs


@pytest.mark.slow   # sweeps a study first
def test_read_only_commands_on_a_finished_study_stay_light(swept_runs, tmp_path):
    report_dir = tmp_path / "report"
    results = run_light(swept_runs, [["studies"], ["report", "--study", "light"],
                                     ["report", "--study", "light", "--html", "--out", str(report_dir)],
                                     ["best", "--study", "light"]])
    assert all(r["exit_code"] == 0 for r in results.values()), results
    assert "light" in results["studies"]["output"]
    assert (report_dir / "best_rollout.gif").is_file()
    best = json.loads(results["best --study light"]["stdout"])
    assert best["study"] == "light" and len(best["mlflow_run_id"]) == 32


def test_importing_any_module_leaves_logging_and_warnings_alone():
    """Quietening libraries is a command's choice (harness.cli.common.quiet_libraries), never an import's."""
    script = """
import importlib, logging, pkgutil, warnings
import mlflow, optuna, scipy.stats, torch   # their own import-time settings are theirs
import harness, models

def state():
    loggers = {name: (lg.level, lg.disabled, lg.propagate, len(lg.handlers))
               for name, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    return list(warnings.filters), logging.getLogger().level, loggers

filters, root, loggers = state()
for package in (harness, models):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not module.name.endswith("__main__"):     # running the CLI is not importing it
            importlib.import_module(module.name)
after_filters, after_root, after_loggers = state()
assert after_filters == filters, [f for f in after_filters if f not in filters]
assert after_root == root
changed = {name: value for name, value in after_loggers.items() if name in loggers and loggers[name] != value}
assert not changed, changed
print("ok")
"""
    process = fresh_python("-c", script)
    assert process.returncode == 0 and process.stdout.strip() == "ok", process.stderr[-3000:]
