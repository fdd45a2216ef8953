"""A throw-away voicectl project for tests: its own .env, state directory and free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "fakes" / "standin.py"


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1):
    """Poll until predicate() is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@dataclass
class Project:
    """A directory with a .env; `run` calls the real voicectl CLI in a subprocess."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.root / ".voicectl"

    def write_env(self, **values: str) -> None:
        lines = [f"{k}={v}" for k, v in values.items()]
        (self.root / ".env").write_text("\n".join(lines) + "\n")

    def run(self, *args: str, check: bool = False, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        full_env = {**self.env, **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "voicectl.cli", *args],
            cwd=self.root,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"voicectl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "voicectl.cli", *args],
            cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )

    def status(self) -> dict[str, dict]:
        out = self.run("status", "--json", check=True).stdout
        return {row["name"]: row for row in json.loads(out)}

    def log(self, name: str) -> str:
        path = self.home / "logs" / f"{name}.log"
        return path.read_text() if path.exists() else ""


def base_env(home: Path) -> dict[str, str]:
    """A clean environment: PATH and Python only, no developer settings leaking in."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["VOICECTL_HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    return env


def new_project(root: Path, **env: str) -> Project:
    """A project in `root` (state in root/.voicectl) with a clean environment plus `env`."""
    proj = Project(root, base_env(root / ".voicectl"))
    proj.env.update(env)
    return proj


def stop_project(proj: Project) -> None:
    """`voicectl down`, then kill whatever still runs from the project's directory."""
    proj.run("down", timeout=60)
    for proc in processes_matching(str(proj.root)):
        proc.kill()


def service_ports_env(livekit: int, letta: int, agent: int) -> dict[str, str]:
    """.env values that put LiveKit, Letta and the agent on the given ports, and the web
    console and metrics on free ones (never the defaults a running stack holds)."""
    return {
        "LIVEKIT_URL": f"ws://127.0.0.1:{livekit}",
        "LETTA_SERVER_URL": f"http://127.0.0.1:{letta}",
        "AGENT_HTTP_PORT": str(agent),
        "WEB_PORT": str(free_port()),
        "METRICS_PORT": str(free_port()),
    }


def standin_cmd(port: int, *extra: str) -> str:
    return " ".join([sys.executable, str(STANDIN), "--port", str(port), *extra])


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def processes_matching(fragment: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if fragment in cmd:
            found.append(proc)
    return found
