"""Run voicectl's LiveKit dev server (``python -m voicectl.livekit_dev``) as a test subprocess.

:func:`start_dev_livekit` picks a free port, starts the server with the options asked for, and
waits until ``GET /`` answers ``OK``. The keys reach it as the real server takes them:
``LIVEKIT_KEYS="key: secret"`` in its environment (the dev pair devkey / secret otherwise).
The returned :class:`DevLiveKit` knows its URLs, the client environment (``.env()``), the
dev-only state document (``GET /_dev/state``: ``.state()``, ``.wait_for()``) and its log.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.project import REPO

DEV_KEY, DEV_SECRET = "devkey", "secret"  # what `livekit-server --dev` accepts
DEV_SERVER_CMD = [sys.executable, "-m", "voicectl.livekit_dev"]


@dataclass
class DevLiveKit:
    """A running dev server subprocess (see :func:`start_dev_livekit`)."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    api_key: str
    api_secret: str
    log_path: Path

    @property
    def url(self) -> str:
        """The ws:// URL, as LIVEKIT_URL would hold it."""
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET for a client or worker."""
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
        }

    def state(self) -> dict[str, Any]:
        """GET /_dev/state: rooms (with participants and tracks), dispatches, workers, jobs."""
        with urllib.request.urlopen(f"{self.http_url}/_dev/state", timeout=5) as resp:
            return dict(json.loads(resp.read()))

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], Any],
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> Any:
        """Poll the state until ``predicate(state)`` is truthy; return that value."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            value = predicate(state)
            if value:
                return value
            if time.monotonic() > deadline:
                text = json.dumps(state)
                if len(text) > 4000:
                    text = text[:2000] + " … " + text[-2000:]
                raise TimeoutError(f"condition not met in {timeout}s; state: {text}")
            time.sleep(interval)

    async def until(
        self,
        predicate: Callable[[dict[str, Any]], Any],
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> Any:
        """``wait_for`` for async tests: polls without blocking the event loop, so the test's
        own tasks (raw workers, rtc clients) keep running meanwhile."""
        return await asyncio.to_thread(self.wait_for, predicate, timeout, interval)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def __enter__(self) -> DevLiveKit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_ready(handle: DevLiveKit, timeout: float) -> bool:
    """True once ``GET /`` answers ``OK``; False if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(handle.http_url + "/", timeout=1) as resp:
                if resp.read() == b"OK":
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.02)
    return False


def start_dev_livekit(
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    api_key: str = DEV_KEY,
    api_secret: str = DEV_SECRET,
    state_file: Path | None = None,
    redispatch_on_register: bool = False,
    availability_timeout: float | None = None,
    empty_timeout: float | None = None,
    departure_timeout: float | None = None,
    missing_room_delay: float | None = None,
    target_load: float | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 15.0,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> DevLiveKit:
    """Start the dev server as a subprocess and wait until ``GET /`` answers ``OK``.

    ``port=None`` picks a free port (retrying if it is taken meanwhile). A key pair other than
    the dev pair goes in ``LIVEKIT_KEYS``, never on the command line. Output goes to
    ``log_path`` (a temporary file by default; see ``.logs()``). ``env`` adds to the
    server's environment; the caller's LIVEKIT_KEYS and VOICECTL_DEV_TARGET_LOAD are not
    inherited (pass ``target_load`` for the latter).
    """
    child_env = {k: v for k, v in os.environ.items()
                 if k not in ("LIVEKIT_KEYS", "VOICECTL_DEV_TARGET_LOAD")}
    if (api_key, api_secret) != (DEV_KEY, DEV_SECRET):
        child_env["LIVEKIT_KEYS"] = f"{api_key}: {api_secret}"
    child_env.update(env or {})
    options: list[str] = []
    if state_file is not None:
        options += ["--state-file", str(state_file)]
    if redispatch_on_register:
        options.append("--redispatch-on-register")
    for flag, value in (
        ("--availability-timeout", availability_timeout),
        ("--empty-timeout", empty_timeout),
        ("--departure-timeout", departure_timeout),
        ("--missing-room-delay", missing_room_delay),
        ("--target-load", target_load),
    ):
        if value is not None:
            options += [flag, str(value)]
    handle: DevLiveKit | None = None
    for _ in range(3 if port is None else 1):
        chosen = port if port is not None else free_port(host)
        path = log_path or Path(tempfile.mkstemp(prefix="livekit-dev-", suffix=".log")[1])
        with path.open("ab") as log_file:
            proc = subprocess.Popen(
                [*DEV_SERVER_CMD, "--bind", host, "--port", str(chosen), *options, *extra_args],
                cwd=REPO,
                env=child_env,
                stdout=log_file,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
            )
        handle = DevLiveKit(proc, host, chosen, api_key, api_secret, path)
        if wait_ready(handle, ready_timeout):
            return handle
        handle.stop()
        if "cannot listen" not in handle.logs():
            break
    logs = handle.logs() if handle else ""
    raise RuntimeError(f"LiveKit dev server did not start:\n{logs}")
