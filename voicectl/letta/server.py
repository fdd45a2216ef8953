"""How to run the managed Letta 0.16.8 server: paths, command, environment.

State layout under VOICECTL_HOME (see `letta_paths`):
    letta/venv/   Letta's own virtual environment (letta_install)
    letta/pg/     the embedded PostgreSQL cluster and socket (postgres)
    letta/home/   HOME and LETTA_DIR (~/.letta: logs, config) of the server
    letta/run/    the server's working directory (it writes openapi_letta.json there)

The supervisor runs `server_argv(...)` with `server_env(...)` from `server_cwd(...)`, probes
its health (letta/health.py), and stops it with SIGTERM, escalating to SIGKILL after
`STOP_TIMEOUT` (with background runs in flight it can ignore SIGTERM).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.state_paths import StatePaths
from voicectl.letta.install import letta_executable

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8283
STOP_SIGNAL = signal.SIGTERM
STOP_TIMEOUT = 10.0
# Inherited variables that would point Letta at another interpreter, venv or config.
_DROP = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "MEMGPT_CONFIG_PATH")


@dataclass(frozen=True)
class LettaPaths:
    """Where the managed Letta's files live."""

    root: Path
    venv: Path
    pg: Path
    home: Path
    workdir: Path

    @property
    def letta_dir(self) -> Path:
        """LETTA_DIR: Letta's own ~/.letta."""
        return self.home / ".letta"

    def ensure(self) -> None:
        """Create home, LETTA_DIR and the working directory (not venv/pg: their modules do)."""
        for path in (self.home, self.letta_dir, self.workdir):
            path.mkdir(parents=True, exist_ok=True)


def letta_paths(state_dir: Path | str) -> LettaPaths:
    """The layout under a state directory (VOICECTL_HOME)."""
    root = StatePaths(Path(state_dir).absolute()).letta
    return LettaPaths(root=root, venv=root / "venv", pg=root / "pg", home=root / "home",
                      workdir=root / "run")


def server_argv(venv: Path | str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> list[str]:
    """The foreground server command: `letta server --host H --port P` from Letta's venv."""
    return [str(letta_executable(venv)), "server", "--host", host, "--port", str(port)]


def server_cwd(state_dir: Path | str) -> Path:
    """The working directory to start the server from (`LettaPaths.ensure` creates it)."""
    return letta_paths(state_dir).workdir


def server_env(
    state_dir: Path | str,
    pg_uri: str,
    openai_api_key: str | None,
    openai_base_url: str | None,
    *,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The full environment for the server process (`base` defaults to os.environ).

    HOME and LETTA_DIR point into the state dir so nothing lands in the user's ~/.letta (and a
    stray ~/.letta/pg_uri cannot override LETTA_PG_URI). With an OPENAI_BASE_URL other than
    api.openai.com, the endpoint's models appear as `openai-proxy/<model>` handles.
    """
    paths = letta_paths(state_dir)  # pure: building the spec (status, doctor) writes nothing
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _DROP}
    venv_bin = str(paths.venv / "bin")
    env.update({
        "HOME": str(paths.home),
        "LETTA_DIR": str(paths.letta_dir),
        "LETTA_PG_URI": pg_uri,
        "NLTK_DATA": str(paths.home / "nltk_data"),
        "PATH": os.pathsep.join([venv_bin, env.get("PATH", "/usr/bin:/bin")]),
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
        "NO_COLOR": "1",
    })
    for key, value in (("OPENAI_API_KEY", openai_api_key), ("OPENAI_BASE_URL", openai_base_url)):
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    if openai_base_url and not openai_api_key:
        env["OPENAI_API_KEY"] = "sk-local"  # an OpenAI-compatible endpoint still wants a key
    return env
