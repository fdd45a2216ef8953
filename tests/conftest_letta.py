"""Fixtures for the managed Letta stack: a real Letta 0.16.8 + embedded PostgreSQL, and the stub.

Load from tests/conftest.py with `pytest_plugins = ["tests.conftest_letta"]` (this also
registers the terminal summary that prints the measured timings).

The Letta venv is installed once and cached at VOICECTL_TEST_LETTA_VENV (default
<repo>/.voicectl-test/letta-venv); PostgreSQL and Letta run as real subprocesses on free
ports, with their state in a fresh directory that the unprivileged PostgreSQL user can reach.
They are started and stopped by the real `voicectl up` / `voicectl down` (`ManagedLetta`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_stub import StubHandle, start_openai_stub
from voicectl.letta import install as letta_install
from voicectl.letta import postgres
from voicectl.letta import server as letta_server

REPO = Path(__file__).resolve().parents[1]
TEST_ROOT = REPO / ".voicectl-test"
LETTA_VENV = Path(os.environ.get("VOICECTL_TEST_LETTA_VENV", TEST_ROOT / "letta-venv"))
TIMINGS: dict[str, float] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> float:
    """Signal, wait, escalate to SIGKILL; return the seconds the graceful stop took."""
    if proc is None or proc.poll() is not None:
        return 0.0
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    return time.monotonic() - started


@dataclass
class ManagedLetta:
    """Postgres + Letta started and stopped by the real `voicectl up` / `voicectl down`."""

    venv: Path
    state_dir: Path
    stub: StubHandle
    pg_port: int = field(default_factory=free_port)
    port: int = field(default_factory=free_port)

    @property
    def paths(self) -> letta_server.LettaPaths:
        return letta_server.letta_paths(self.state_dir)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pg_uri(self) -> str:
        return postgres.uri(self.paths.pg, self.pg_port)

    def log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def write_env(self) -> None:
        """The project's .env: managed Letta on free ports, the cached venv, the stub."""
        values = {
            "LETTA_MODE": "managed",
            "LETTA_SERVER_URL": self.base_url,
            "LETTA_PG_PORT": str(self.pg_port),
            "LETTA_VENV": str(self.venv),
            "OPENAI_BASE_URL": self.stub.base_url,
            "OPENAI_API_KEY": "sk-test",
        }
        (self.state_dir / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))

    def voicectl(self, *args: str, timeout: float = 300) -> float:
        """Run the real CLI in the project; return its wall time; fail with its output."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LETTA_", "OPENAI_"))}
        env.update(VOICECTL_HOME=str(self.state_dir), PYTHONPATH=str(REPO))
        started = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "voicectl.cli", *args], cwd=self.state_dir,
                             env=env, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"voicectl {' '.join(args)} exited {res.returncode}:\n"
                               f"{res.stderr}\n{_tail(self.log(args[-1]))}")
        return time.monotonic() - started

    def start_postgres(self) -> None:
        started = time.monotonic()
        self.voicectl("up", "postgres")
        TIMINGS.setdefault("postgres_start_to_ready_s", time.monotonic() - started)

    def stop_postgres(self) -> float:
        return self.voicectl("down", "postgres")

    def start_letta(self, timeout: float = 300.0) -> float:
        """`voicectl up letta`; return launch-to-healthy seconds (postgres already up)."""
        return self.voicectl("up", "letta", timeout=timeout)

    def stop_letta(self) -> float:
        return self.voicectl("down", "letta")

    def stop(self) -> None:
        self.voicectl("down")


@pytest.fixture
def openai_stub() -> Iterator[StubHandle]:
    """A fresh OpenAI-compatible stub on a free port (function scope)."""
    handle = start_openai_stub()
    try:
        yield handle
    finally:
        handle.stop()


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
    handle = start_openai_stub()
    try:
        yield handle
    finally:
        handle.stop()


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
    if not TIMINGS:
        return
    terminalreporter.section("managed Letta timings")
    for key, value in sorted(TIMINGS.items()):
        terminalreporter.write_line(f"{key:34s} {value:7.2f}")
    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    (TEST_ROOT / "timings.json").write_text(json.dumps(TIMINGS, indent=1) + "\n")


__all__ = [
    "ManagedLetta", "TIMINGS", "free_port", "letta_stub", "letta_venv", "managed_letta",
    "openai_stub", "pytest_terminal_summary",
]
