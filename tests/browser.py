"""A real headless browser for the report tests: Debian's chromium loads a page from disk."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def require_chromium() -> str:
    """chromium's path; skip where it is missing, unless $HARNESS_REQUIRE_SYSTEM_TOOLS says it must be there (CI)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("HARNESS_REQUIRE_SYSTEM_TOOLS"):
        pytest.fail("chromium is not installed and $HARNESS_REQUIRE_SYSTEM_TOOLS is set")
    pytest.skip("chromium is not installed")


def load_page(page: Path, screenshot: Path) -> tuple[str, list[str]]:
    """Load `page` headless: save a screenshot, and return the DOM after its scripts ran and the
    console messages it logged (errors, failed resource loads, anything)."""
    browser = require_chromium()
    # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--enable-logging=stderr", "--v=0"]
    shot = subprocess.run([*base, "--window-size=1280,2400", f"--screenshot={screenshot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and dom.returncode == 0, shot.stderr[-2000:] + dom.stderr[-2000:]
    console = [line for line in (shot.stderr + dom.stderr).splitlines() if ":CONSOLE" in line]
    return dom.stdout, console
