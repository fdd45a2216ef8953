"""Headless Chromium for the console's tests: Debian's chromium driven by playwright-core
(tests/web/driver.mjs; it only acts and observes, the assertions are the tests')."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.project import REPO

CHROMIUM = Path("/usr/bin/chromium")
DRIVER = REPO / "tests" / "web" / "driver.mjs"
PLAYWRIGHT = REPO / "tests" / "web" / "node_modules" / "playwright-core"


def browser_missing() -> str | None:
    if not (CHROMIUM.exists() and PLAYWRIGHT.exists() and shutil.which("node")):
        return "chromium or playwright-core missing: run scripts/install_test_deps.sh"
    return None


def fail_missing(reason: str) -> None:
    """A missing browser is a failure: `make install-test` installs one."""
    pytest.fail(reason, pytrace=False)


def run_browser(steps: list[dict[str, Any]], args: list[str] | None = None,
                timeout: float = 120) -> dict[str, Any]:
    """Run the steps in headless Chromium; fail the test with what the page showed."""
    if reason := browser_missing():
        fail_missing(reason)
    spec: dict[str, Any] = {"executable": str(CHROMIUM), "steps": steps, "timeout_ms": 20000}
    if args:
        spec["args"] = args
    proc = subprocess.run(["node", str(DRIVER)], input=json.dumps(spec), capture_output=True,
                          text=True, timeout=timeout, cwd=DRIVER.parent)
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"driver exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    if not out["ok"]:
        pytest.fail(f"browser step {out.get('failed_step')} failed: {out['error']}\n"
                    f"page:\n{out.get('body_text')}\nconsole:\n" + "\n".join(out["console"]))
    assert out["page_errors"] == [], out["page_errors"]
    return out
