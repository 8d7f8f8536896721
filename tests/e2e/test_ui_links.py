"""`harness ui` in real processes: the link it prints for a study opens the MLflow UI (headless chromium)
on the study's trials side by side, best final PSNR first; with --study it opens that link in the
browser; a password in the tracking URI reaches no command line and no output."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


from browser import require_chromium
from servers import free_port, postgres_server, stop_group
from sweep_helpers import harness, ok, study, write_spec

SECRET = "PW-s3cr3t"


@contextlib.contextmanager
def ui_process(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", "ui", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        yield process
    finally:
        stop_group(process)


def wait_for(condition, process: subprocess.Popen, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.2)
    return value


def browse(url: str) -> str:
    """The DOM of `url` once its scripts ran (and their requests came back)."""
    dom = subprocess.run([require_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          "--virtual-time-budget=20000", "--window-size=1400,900", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


def test_a_study_s_link_opens_on_its_trials_best_final_psnr_first(tiny_data_root, tmp_path):
    runs = tmp_path / "runs"
    spec = write_spec(tmp_path / "linked.yaml", tiny_data_root, n_trials=3, pruner={"type": "none"})
    ok(harness("sweep", "--study", str(spec), "--runs-dir", str(runs), "--device", "cpu"))
    trials = study(runs, "linked").get_trials()
    opened = tmp_path / "opened.txt"
    recorder = tmp_path / "browser.py"
    recorder.write_text(f"import sys; open({str(opened)!r}, 'w').write(sys.argv[1])\n")
    port = free_port()
    with ui_process("--runs-dir", str(runs), "--port", str(port), "--study", "linked",
                    env={"BROWSER": f"{sys.executable} {recorder} %s"}) as ui:
        link = wait_for(lambda: next((line.split(": ", 1)[1].strip() for line in iter(ui.stdout.readline, "")
                                      if line.startswith("linked: ")), None), ui)
        assert link == (f"http://127.0.0.1:{port}/#/experiments/1/runs?viewStateShareKey=harness-trials"
                        "&workflowType=machine_learning")
        # The browser opens on the study's link once the UI answers.
        wait_for(opened.exists, ui)
        assert opened.read_text() == link
        page = browse(link)
    # Only the trials (not the study's parent run), best final PSNR first, that PSNR in a column.
    assert "<strong>3</strong> matching runs" in page and "final/psnr" in page
    assert "Model registry" in page      # MLflow's side bar of model training, not its GenAI one
    best_first = sorted(trials, key=lambda t: -t.value)
    positions = [page.index(f"trial-{t.number:04d}") for t in best_first]
    assert positions == sorted(positions)
    shown = [float(number) for number in re.findall(r">(\d+\.\d+)<", page)]
    assert all(any(abs(value - t.value) < 1e-6 for value in shown) for t in trials), shown


def test_a_password_in_the_tracking_uri_reaches_no_command_line(tmp_path):
    with postgres_server(("mlflow",)) as databases:
        uri = databases["mlflow"].replace("harness@", f"harness:{SECRET}@")   # trust auth: any password does
        port = free_port()
        # Given in the environment, as a careful user does: then no command line on the machine shows it.
        with ui_process("--runs-dir", str(tmp_path), "--port", str(port), env={"MLFLOW_TRACKING_URI": uri}) as ui:
            wait_for(lambda: _answers(port), ui)
            assert not [command for command in command_lines() if SECRET in command]
            stop_group(ui)
            out, err = ui.communicate(timeout=60)
    assert SECRET not in out + err and "harness:***@127.0.0.1" in err


def _answers(port: int) -> bool:
    import urllib.request

    with contextlib.suppress(OSError):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status == 200
    return False


def command_lines() -> list[str]:
    """Every process's command line on this machine, as `ps` shows them."""
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            found.append(path.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found
