"""Fixtures every test module may use: the OpenAI stub, throw-away projects, managed Letta.

What they are built from lives in tests/support/; the programs they run in tests/fakes/.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_stub import StubHandle
from tests.support.letta import LETTA_VENV, TEST_ROOT, TIMINGS, ManagedLetta
from tests.support.llm_stub import running_openai_stub
from tests.support.project import Project, new_project, stop_project
from voicectl.letta import install as letta_install

# ----------------------------------------------------------------------------- the OpenAI stub


@pytest.fixture
def openai_stub() -> Iterator[StubHandle]:
    """A fresh OpenAI-compatible stub on a free port (function scope)."""
    with running_openai_stub() as handle:
        yield handle


@pytest.fixture(scope="module")
def module_openai_stub() -> Iterator[StubHandle]:
    """One stub for all the tests of a module (starting one per test costs time)."""
    with running_openai_stub() as handle:
        yield handle


@pytest.fixture
def stub(module_openai_stub: StubHandle) -> StubHandle:
    """The module's stub, reset: no faults, latency or recorded requests of earlier tests."""
    module_openai_stub.reset()
    return module_openai_stub


# ----------------------------------------------------------------------------- projects


@pytest.fixture
def make_project(tmp_path: Path) -> Iterator[Callable[..., Project]]:
    """Makes the test's project in tmp_path: a clean environment plus `env`; `.env` lines
    are the caller's (`project.write_env`). With stop_at_end=True the project's services are
    stopped, and anything still running from tmp_path killed, when the test ends."""
    to_stop: list[Project] = []

    def make(env: dict[str, str] | None = None, *, stop_at_end: bool = False) -> Project:
        proj = new_project(tmp_path, **(env or {}))
        if stop_at_end:
            to_stop.append(proj)
        return proj

    yield make
    for proj in to_stop:
        stop_project(proj)


# ----------------------------------------------------------------------------- managed Letta


@pytest.fixture(scope="session")
def letta_venv() -> Path:
    """Letta's own venv, installed once (about 2 min) and reused across runs."""
    started = time.monotonic()
    installed = letta_install.install_letta(LETTA_VENV, progress=lambda m: print(f"[letta] {m}"))
    if installed:
        TIMINGS["letta_install_s"] = time.monotonic() - started
    return LETTA_VENV


@pytest.fixture(scope="session")
def letta_stub() -> Iterator[StubHandle]:
    """The stub Letta talks to (session scope, so it outlives Letta restarts)."""
    with running_openai_stub() as handle:
        yield handle


@pytest.fixture(scope="session")
def managed_letta(letta_venv: Path, letta_stub: StubHandle) -> Iterator[ManagedLetta]:
    """A running Postgres + Letta pointed at `letta_stub`; stopped and removed at the end."""
    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="state-", dir=TEST_ROOT))
    state_dir.chmod(0o755)  # the PostgreSQL user must be able to traverse it
    stack = ManagedLetta(venv=letta_venv, state_dir=state_dir, stub=letta_stub)
    stack.write_env()
    try:
        stack.start_postgres()
        TIMINGS["voicectl_up_letta_first_s"] = stack.start_letta()  # schema + launch to healthy
        yield stack
    finally:
        stack.stop()
        if os.environ.get("VOICECTL_TEST_KEEP_STATE") != "1":
            shutil.rmtree(state_dir, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The managed Letta timings measured in this run, printed and kept in timings.json."""
    if not TIMINGS:
        return
    terminalreporter.section("managed Letta timings")
    for key, value in sorted(TIMINGS.items()):
        terminalreporter.write_line(f"{key:34s} {value:7.2f}")
    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    (TEST_ROOT / "timings.json").write_text(json.dumps(TIMINGS, indent=1) + "\n")
