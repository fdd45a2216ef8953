"""Which LiveKit server runs: the one place that decides it (services, status, doctor, up).

`VOICECTL_LIVEKIT_CMD` wins; a non-loopback `LIVEKIT_URL` is someone else's server (probed,
never started); otherwise `LIVEKIT_SERVER` picks the real `livekit-server` binary or voicectl's
embedded dev server. `auto` looks for the binary in `LIVEKIT_SERVER_BIN`, then on PATH, then in
`<state dir>/bin/` (where `voicectl install livekit` puts it) and falls back to the embedded
server. The API keys reach either server as `LIVEKIT_KEYS` in its environment, never on its
command line (`ps` shows that to every user); the real `--dev` server ignores
`LIVEKIT_API_KEY` / `LIVEKIT_API_SECRET` and would accept only devkey / secret.

Kept cheap to import: standard library only (the CLI imports it at start-up).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent.config import LOOPBACK_HOSTS, Settings

BINARY_NAME = "livekit-server"
EMBEDDED_MODULE = "voicectl.livekit_dev"
BINARY, EMBEDDED, COMMAND, EXTERNAL = "binary", "embedded", "command", "external"

EMBEDDED_LIMITS = ("for development only: one machine, audio only (no video), no simulcast, "
                   "no congestion control")
GET_BINARY = ("voicectl install livekit, or brew install livekit, or a release from "
              "github.com/livekit/livekit/releases; or set LIVEKIT_SERVER_BIN to its path")


@dataclass(frozen=True)
class LiveKitChoice:
    """The server `voicectl up` would run, and why.

    `kind` is binary | embedded | command | external; `path` is the binary's absolute path
    (binary only, "" when LIVEKIT_SERVER=binary found none: then `problem` says so and how to
    fix it); `argv` is None for an external server; `env` goes to the server's environment.
    """

    kind: str
    reason: str
    argv: list[str] | None = None
    path: str = ""
    env: dict[str, str] = field(default_factory=dict)
    problem: str = ""
    looked: str = ""  # where the binary was looked for, when none was found

    def describe(self, version: bool = True) -> str:
        """One line for `up` and `doctor`: the binary with its version, or what runs instead."""
        if self.kind == BINARY and self.path:
            return f"{self.path} {binary_version(self.path)}" if version else self.path
        return label(self.kind, self.path, self.reason)


def label(kind: str, path: str = "", reason: str = "") -> str:
    """Human name of a server kind (status shows it without the version)."""
    text = {
        BINARY: f"livekit-server binary {path}" if path else "livekit-server binary (not found)",
        EMBEDDED: "embedded dev server",
        COMMAND: "VOICECTL_LIVEKIT_CMD",
        EXTERNAL: "external server",
    }.get(kind, kind)
    return f"{text} ({reason})" if reason else text


def keys_env(settings: Settings) -> dict[str, str]:
    """The configured key pair in the real server's `LIVEKIT_KEYS` format."""
    return {"LIVEKIT_KEYS": f"{settings.livekit_api_key}: {settings.livekit_api_secret}"}


def _which(program: str, project_dir: Path) -> str | None:
    """Absolute path of an executable: a path (relative to the project) or a name on PATH."""
    if os.sep in program:
        candidate = Path(program).expanduser()
        if not candidate.is_absolute():
            candidate = project_dir / candidate
        program = str(candidate)
    found = shutil.which(program)
    return os.path.abspath(found) if found else None


def find_binary(settings: Settings) -> tuple[str | None, str]:
    """(path, where it was found) of livekit-server, or (None, the places looked in)."""
    explicit = settings.sources.get("livekit_server_bin", "default") != "default"
    places = [(settings.livekit_server_bin, "LIVEKIT_SERVER_BIN" if explicit else "PATH")]
    if settings.livekit_server_bin != BINARY_NAME:
        places.append((BINARY_NAME, "PATH"))
    places.append((str(settings.paths.bin / BINARY_NAME), "state dir"))
    for program, where in places:
        path = _which(program, settings.project_dir)
        if path:
            return path, where
    looked = [f"LIVEKIT_SERVER_BIN {settings.livekit_server_bin!r}"] if explicit else []
    return None, ", ".join([*looked, "PATH", str(settings.paths.bin)])


def choose(settings: Settings) -> LiveKitChoice:
    """Decide which LiveKit server this configuration runs (no process is started)."""
    from voicectl.services.overrides import command_override

    port = str(settings.livekit_port)
    override = command_override(settings, "livekit")
    if override is not None:
        return LiveKitChoice(COMMAND, override[0] if override else "", argv=override)
    host = urlsplit(settings.livekit_url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        return LiveKitChoice(EXTERNAL, settings.livekit_url)
    embedded_argv = [sys.executable, "-m", EMBEDDED_MODULE, "--bind", "127.0.0.1", "--port", port]
    if settings.livekit_server == EMBEDDED:
        return LiveKitChoice(EMBEDDED, "LIVEKIT_SERVER=embedded", argv=embedded_argv,
                             env=keys_env(settings))
    path, where = find_binary(settings)
    if path is None and settings.livekit_server == BINARY:
        problem = (f"LIVEKIT_SERVER=binary but no livekit-server found ({where}); fix: "
                   "voicectl install livekit, or set LIVEKIT_SERVER_BIN to its path, "
                   "or LIVEKIT_SERVER=embedded")
        return LiveKitChoice(BINARY, "", argv=[settings.livekit_server_bin, *_dev_args(port)],
                             env=keys_env(settings), problem=problem, looked=where)
    if path is None:
        return LiveKitChoice(EMBEDDED, "no livekit-server binary found", argv=embedded_argv,
                             env=keys_env(settings), looked=where)
    return LiveKitChoice(BINARY, where, argv=[path, *_dev_args(port)], path=path,
                         env=keys_env(settings))


def _dev_args(port: str) -> list[str]:
    return ["--dev", "--bind", "127.0.0.1", "--port", port]


def binary_version(path: str, timeout: float = 5.0) -> str:
    """`livekit-server --version`'s number (its whole first line when it has none)."""
    try:
        res = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        line = (res.stdout or res.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "version unknown"
    words = line.split()
    return words[-1] if words and words[-1][:1].isdigit() else line


def running_kind(choice: LiveKitChoice, cmd: list[str]) -> tuple[str, str]:
    """(kind, path) of a live server process: the choice, unless the process shows that it was
    started under another configuration (a binary installed while the embedded server ran)."""
    embedded = EMBEDDED_MODULE in cmd
    if choice.kind == COMMAND or embedded == (choice.kind == EMBEDDED):
        return choice.kind, choice.path
    if embedded:
        return EMBEDDED, ""
    path = next((c for c in cmd[:2] if os.path.basename(c) == BINARY_NAME), "")
    return (BINARY, path) if path else (COMMAND, "")
