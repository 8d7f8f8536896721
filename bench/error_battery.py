"""The error battery's figures: a new user's mistakes (the cases of tests/unit/cli/test_error_battery.py,
a busy port and a read-only runs folder) run as real `harness` command lines against a checkout's code,
each tallied as the battery test judges it: a clean one-line error, bug-labelled, a traceback, a silent
success, stores changed, not one line with status 2, a password shown, or not naming what is at fault.

    python bench/error_battery.py --repo /tmp/base-11ce32b --repo .

Each checkout runs with PYTHONPATH set to its folder, so that its harness and models are the ones that
answer; the case list and the judging are this tree's. Each case gets a fresh copy of a scratch folder
(a runs folder with the 2026-12 Optuna store and an MLflow store, a regular file, an empty file, a
checkpoint trained by that checkout, a study spec) and runs in it, so that a store or folder created by
default is seen; its files are checksummed before and after.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "unit" / "cli")]

import optuna  # noqa: E402
from common import record  # noqa: E402
from sweep_helpers import write_spec  # noqa: E402
from test_error_battery import CASES, SECRET, Case, Scratch  # noqa: E402

# The order the figures are told in (the issue's, then what the test tells apart besides).
OUTCOMES = ("clean", "bug-labelled", "traceback", "silent success", "stores changed",
            "not one line with status 2", "password shown", "does not name what is at fault")
# What a checkout trains its checkpoint and writes its MLflow store with (its own code, in a subprocess).
PREPARE = """
import sys
from pathlib import Path
from mlflow import MlflowClient
from models.config import TrainConfig
from models.data import load_dance_data
from models.synth import generate_dataset
from models.trainer import Trainer

folder = Path(sys.argv[1])
generate_dataset(folder / "data", train_videos=4, val_videos=1, test_videos=1, frames=64, val_frames=48, seed=1)
config = TrainConfig(f_dim=16, l_dim=8, n_dim=4, d_out_dim=16, epochs=1, batch_size=4, train_vi_len=8,
                     val_vi_len=24, partial=0.25, device="cpu", seed=0, baselines=False)
Trainer(config, load_dance_data(folder / "data", train_vi_len=8, val_vi_len=24), folder / "run").fit()
MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
"""
# Seconds a case may run; a command still running then (a sweep, a UI server) did its work without a word.
CASE_SECONDS = 120
SERVER_SECONDS = 45


@dataclass(frozen=True)
class Outcome:
    case: str
    got: str
    status: int | None      # None: stopped at its time limit
    seconds: float
    last_line: str


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under `root`, with each file's SHA-256 (the battery test's)."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            for path in sorted(root.rglob("*"))}


def judge(status: int | None, output: str, named: tuple[str, ...], changed: bool) -> str:
    """The battery test's judgement (test_error_battery.outcome), on a process's status and output."""
    lines = [line for line in output.splitlines() if line.strip()]
    if "Traceback" in output:
        return "traceback"
    if status in (0, None):
        return "silent success"
    if any(line.startswith("bug:") for line in lines):
        return "bug-labelled"
    if changed:
        return "stores changed"
    if status != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
        return "not one line with status 2"
    if SECRET in output:
        return "password shown"
    if not all(fragment in lines[0] for fragment in named):
        return "does not name what is at fault"
    return "clean"


def prepare(repo: Path, folder: Path) -> Path:
    """The scratch folder the cases start from, its checkpoint and stores written by `repo`'s code."""
    # In `folder`: `python -c` puts its working folder first on sys.path, before PYTHONPATH.
    subprocess.run([sys.executable, "-c", PREPARE, str(folder)], check=True, cwd=folder,
                   env=checkout_env(repo, folder), capture_output=True, text=True)
    template = folder / "template"
    runs = template / "runs"
    runs.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "data" / "store-2026-12" / "optuna.db", runs / "optuna.db")
    shutil.move(folder / "mlflow.db", runs / "mlflow.db")
    shared = template / "shared"
    shared.mkdir()
    # A store written by other means than a spec may hold any study name.
    study = optuna.create_study(study_name="../../x", storage=f"sqlite:///{shared / 'optuna.db'}",
                                direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=20.0, user_attrs={"mlflow_run_id": "0" * 32}))
    (template / "afile").write_text("a regular file\n")
    (template / "empty.pt").touch()
    shutil.copy(folder / "run" / "checkpoints" / "last.pt", template / "last.pt")
    return template


def checkout_env(repo: Path, folder: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("HARNESS_STORAGE", "MLFLOW_TRACKING_URI", "HARNESS_RUNS_DIR", "HARNESS_DEBUG")}
    # BROWSER: a `ui --study` that gets as far as opening a browser opens none.
    return {**env, "PYTHONPATH": str(repo), "HARNESS_CACHE_DIR": str(folder / "cache"), "BROWSER": "true",
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(extra or {})}


def run_case(repo: Path, folder: Path, root: Path, args: list[str], env: dict[str, str]) -> tuple[int | None, str]:
    """`harness ARGS` run by `repo`'s code in `root`; its status (None if it ran past its limit) and output."""
    limit = SERVER_SECONDS if args[0] == "ui" else CASE_SECONDS
    # Output to a file, not a pipe: a server the command started in a session of its own may hold a pipe open.
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=root, text=True,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=checkout_env(repo, folder, env))
        try:
            status: int | None = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            status = None
            for pid in [*descendants(process.pid), process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(pid), signal.SIGKILL)      # its group: a UI server's workers with it
            process.wait()
        output.seek(0)
        return status, output.read()


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, children first."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [grandchild for child in map(int, children) for grandchild in (child, *descendants(child))]


@contextlib.contextmanager
def read_only_copy(runs: Path, folder: Path) -> Iterator[Path | None]:
    """A copy of `runs`' stores on a read-only file system at `folder` (None where none can be mounted)."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True).returncode:
        yield None
        return
    try:
        for name in ("optuna.db", "mlflow.db"):
            shutil.copy(runs / name, folder / name)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True, capture_output=True)


@dataclass(frozen=True)
class Probe:
    """One command line to judge: the test's Case, or one of its other functions' (`place`: "port", a port
    something listens on, or "read-only", a read-only runs folder, passed to `args`)."""
    id: str
    args: Callable[[Scratch, object], list]
    named: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Scratch], None] = lambda scratch: None
    place: str | None = None
    reader: bool = False    # a read-only command on a read-only runs folder: it must work, printing `named`

    @classmethod
    def of(cls, case: Case) -> Probe:
        return cls(case.id, lambda s, place: case.args(s), case.named, case.env, case.setup)


PROBES = [
    Probe("ui-busy-port", lambda s, port: ["ui", "--runs-dir", s.runs, "--port", port], ("--port", "in use"),
          place="port"),
    Probe("sweep-read-only-runs", lambda s, ro: ["sweep", "--study", s.spec, "--device", "cpu", "--runs-dir", ro],
          ("--runs-dir", "cannot be written"), place="read-only"),
    Probe("report-html-read-only-runs", lambda s, ro: ["report", "--study", "legacy", "--html", "--runs-dir", ro],
          ("--runs-dir", "mlflow.db", "cannot be written"), place="read-only"),
    Probe("best-export-read-only-runs", lambda s, ro: ["best", "--study", "legacy", "--export", "ckpt", "--runs-dir", ro],
          ("--runs-dir", "mlflow.db", "cannot be written"), place="read-only"),
    Probe("studies-read-only-runs", lambda s, ro: ["studies", "--runs-dir", ro], ("legacy_seeds",),
          place="read-only", reader=True),
    Probe("report-read-only-runs", lambda s, ro: ["report", "--study", "legacy", "--runs-dir", ro],
          ("the search's trials",), place="read-only", reader=True),
]


@contextlib.contextmanager
def place_for(kind: str | None, root: Path, scratch: Scratch) -> Iterator[object]:
    if kind == "port":
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            yield taken.getsockname()[1]
    elif kind == "read-only":
        with read_only_copy(scratch.runs, root / "read-only") as folder:
            yield folder
    else:
        yield ""


def scratch_in(template: Path, root: Path, data: Path) -> Scratch:
    shutil.copytree(template, root)
    scratch = Scratch(root, root / "runs", root / "afile", data, root / "last.pt", root / "empty.pt",
                      root / "study.yaml", root / "nowhere", root / "shared")
    write_spec(scratch.spec, data)
    return scratch


def judge_reader(status: int | None, output: str, named: tuple[str, ...], changed: bool) -> str:
    """A read-only command that must work: "clean" when it did, read what it must and changed nothing."""
    if status == 0:
        return "stores changed" if changed else "clean" if named[0] in output else "not one line with status 2"
    got = judge(status, output, named, changed)
    # A clean one-line error is still a failure here: nothing was wrong with what the user typed.
    return "does not name what is at fault" if got == "clean" else got


def try_probe(probe: Probe, repo: Path, folder: Path, root: Path) -> Outcome | None:
    """`probe` run by `repo`'s code in a fresh scratch folder at `root` (None: it cannot be set up here)."""
    scratch = scratch_in(folder / "template", root, folder / "data")
    start = time.monotonic()
    with place_for(probe.place, root, scratch) as place:
        if place is None:
            return None
        probe.setup(scratch)
        before = tree(root)
        status, output = run_case(repo, folder, root, [str(a) for a in probe.args(scratch, place)], probe.env)
        changed = tree(root) != before
    got = (judge_reader if probe.reader else judge)(status, output, probe.named, changed)
    lines = [line for line in output.splitlines() if line.strip()]
    return Outcome(probe.id, got, status, time.monotonic() - start, lines[-1][:200] if lines else "")


def battery(repo: Path, only: str | None) -> list[Outcome]:
    """Every probe, run by `repo`'s code, with its outcome."""
    probes = [Probe.of(c if isinstance(c, Case) else c.values[0]) for c in CASES] + PROBES
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="battery-") as tmp:
        folder = Path(tmp)
        prepare(repo, folder)
        for number, probe in enumerate(probe for probe in probes if not only or only in probe.id):
            outcome = try_probe(probe, repo, folder, folder / f"case-{number:03d}")
            shutil.rmtree(folder / f"case-{number:03d}", ignore_errors=True)
            if outcome is None:
                print(f"{probe.id}: skipped (no read-only file system can be mounted here)", flush=True)
                continue
            outcomes.append(outcome)
            print(f"{probe.id}: {outcome.got} (status {outcome.status}, {outcome.seconds:.0f} s): "
                  f"{outcome.last_line}", flush=True)
    return outcomes


def describe(repo: Path) -> str:
    """The checkout's folder and, where it is a git work tree, its commit (and whether it has changes)."""
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if commit.returncode:
        return str(repo)
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "harness", "models"],
                           capture_output=True, text=True).stdout.strip()
    return f"{repo} ({commit.stdout.strip()}{' with uncommitted changes' if dirty else ''})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, action="append", required=True,
                        help="A checkout whose code answers the cases (repeat to compare, the baseline first).")
    parser.add_argument("--only", help="Run only the cases whose id holds this text (a probe: nothing recorded).")
    parser.add_argument("--no-record", action="store_true", help="Print the figures, append nothing to BENCHMARKS.md.")
    args = parser.parse_args()
    results = {repo.resolve(): battery(repo.resolve(), args.only) for repo in args.repo}
    lines = [f"{len(next(iter(results.values())))} cases (tests/unit/cli/test_error_battery.py's, a busy port, a "
             "read-only runs folder for 3 writers and 2 readers), each a `harness` process in a fresh scratch "
             "folder checksummed before and after; 'clean' is one line `error: ...`, status 2, naming the option "
             "or file, nothing changed (for the 2 readers: they work).", ""]
    for repo, outcomes in results.items():
        counts = collections.Counter(outcome.got for outcome in outcomes)
        tally = ", ".join(f"{counts[name]} {name}" for name in OUTCOMES if counts[name])
        seconds = sum(outcome.seconds for outcome in outcomes)
        lines.append(f"- {describe(repo)}: {tally} ({seconds / 60:.1f} min)")
        lines += [f"  - {o.case}: {o.got} ({o.last_line})" for o in outcomes if o.got != "clean"]
    record("Error battery: a new user's mistakes", lines, append=not (args.no_record or args.only))


if __name__ == "__main__":
    main()
