"""The house's rules: imports flow one way between harness/'s packages, models/ knows nothing of the
harness, and the packages that read stores or specs never load torch or the trainer."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each package of harness/ and what of the harness it may import (its own modules always).
# The leaves (errors.py, intervals.py, ranking.py) below all of them; cli/ sits on top.
MAY_IMPORT = {
    "spec": {"errors"},
    "outputs": set(),
    "store": {"errors", "outputs", "ranking"},
    "report": {"errors", "intervals", "outputs", "ranking", "store"},
    "worker": {"errors", "intervals", "outputs", "ranking", "spec", "store"},
    "cli": {"errors", "intervals", "outputs", "ranking", "report", "spec", "store", "worker"},
}
# Modules at harness/'s top: statistics that the worker and the report share, and the error classes.
LEAVES = {"errors": set(), "intervals": set(), "ranking": {"intervals"}}
# Packages that must stay light: read-only commands and reports import them on machines without a GPU
# driver, and in a second (torch takes seconds to import).
NO_TORCH = ("spec", "store", "report", "outputs")


def harness_imports(path: Path) -> set[str]:
    """The harness packages (or leaf modules) that a module imports, by their first name below harness."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(ROOT / "harness").parts[0].removesuffix(".py")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:      # relative: .x stays in the package; ..x is another package of harness
                if node.level >= 2 or package in LEAVES:
                    found.add((node.module or "").split(".")[0])
            elif node.module and node.module.split(".")[0] == "harness":
                found |= {node.module.split(".")[1]} if "." in node.module else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("harness.")}
    return found - {package}


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_flow_one_way_between_the_harness_packages(package):
    wrong = {f"{path.relative_to(ROOT)} imports harness.{name}"
             for path in modules(f"harness/{package}") for name in harness_imports(path)
             if name not in MAY_IMPORT[package]}
    assert not wrong, sorted(wrong)


def test_the_leaf_modules_import_only_leaves():
    for name, allowed in LEAVES.items():
        assert harness_imports(ROOT / "harness" / f"{name}.py") <= allowed, name


def test_models_know_nothing_of_the_harness_optuna_or_mlflow():
    for path in modules("models"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert not {name.split(".")[0] for name in names} & {"harness", "optuna", "mlflow"}, path


def test_light_packages_never_load_torch_or_the_trainer():
    """Every module of spec/, store/, report/ and outputs/ imported in a fresh interpreter."""
    names = [".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
             for package in NO_TORCH for path in modules(f"harness/{package}")]
    script = ("import importlib, sys\n"
              f"for name in {names!r}:\n"
              "    importlib.import_module(name)\n"
              "print(sorted(m for m in ('torch', 'models.trainer') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
