"""Our agent worker (`python -m agent start`) as a real process against the LiveKit dev server,
with the LLM and Letta on ports that refuse connections."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.support.livekit import DevLiveKit
from tests.support.ports import dead_url, free_port
from tests.support.project import REPO


def worker_env(livekit: DevLiveKit, home: Path, env_file: Path,
               **overrides: str | None) -> dict[str, str]:
    """The worker's environment: this process's (without LETTA_* / OPENAI_*), the dev server's
    keys, state in `home`, free ports; `overrides` win, and a None leaves that variable out."""
    env: dict[str, str | None] = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LETTA_", "OPENAI_"))},
        **livekit.env(),
        "VOICECTL_HOME": str(home),
        "VOICECTL_ENV_FILE": str(env_file),
        "AGENT_HTTP_PORT": str(free_port()),
        "METRICS_PORT": str(free_port()),  # never the default 9100 a running agent holds
        "AGENT_LOAD_THRESHOLD": "0.99",
        "OPENAI_BASE_URL": dead_url() + "/v1",
        "LETTA_SERVER_URL": dead_url(),
        "PYTHONPATH": str(REPO),
        **overrides,
    }
    return {k: v for k, v in env.items() if v is not None}


@contextlib.contextmanager
def running_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The worker in its own process group, its output in `log`; on exit SIGTERM to the
    group, SIGKILL when it has not ended within 10 s."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "start"], cwd=REPO, env=env,
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        yield proc
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(10)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
