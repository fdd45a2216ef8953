"""The managed Letta stack for tests: a real Letta 0.16.8 + embedded PostgreSQL, and the stub.

The Letta venv is installed once and cached at VOICECTL_TEST_LETTA_VENV (default
<repo>/.voicectl-test/letta-venv); PostgreSQL and Letta run as real subprocesses on free
ports, with their state in a fresh directory that the unprivileged PostgreSQL user can reach.
They are started and stopped by the real `voicectl up` / `voicectl down` (`ManagedLetta`).
The fixtures that hold the stack (letta_venv, letta_stub, managed_letta) and the summary of
the measured TIMINGS are in tests/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakes.openai_stub import StubHandle
from tests.support.ports import free_port
from tests.support.project import REPO
from voicectl.letta import postgres
from voicectl.letta import server as letta_server

TEST_ROOT = REPO / ".voicectl-test"
LETTA_VENV = Path(os.environ.get("VOICECTL_TEST_LETTA_VENV", TEST_ROOT / "letta-venv"))
#: Seconds the Letta tests measured, by name: printed at the end and kept in timings.json.
TIMINGS: dict[str, float] = {}


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


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
