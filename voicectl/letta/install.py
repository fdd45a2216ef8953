"""Install the Letta 0.16.8 server into its own virtual environment and create its schema.

Letta's pins (openai 2.x, protobuf 5.x, ...) clash with livekit-agents, so Letta never shares the
project's venv. The install is idempotent: a marker file in the venv records what was installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

LETTA_VERSION = "0.16.8"
PIP_VERSION = "26.3"
EXTRA_PACKAGES: tuple[str, ...] = ("asyncpg", "pgvector")
MARKER_NAME = "voicectl-letta.json"
CONSTRAINTS_NAME = f"letta-{LETTA_VERSION}-constraints.txt"

Progress = Callable[[str], None]


class LettaSetupError(RuntimeError):
    """Installing Letta or preparing its database failed; the message says why."""


def _noop(_msg: str) -> None:
    pass


def constraints_file() -> Path:
    """The pip constraints file shipped with voicectl (the pins of the Letta release)."""
    return Path(__file__).resolve().parent / "data" / CONSTRAINTS_NAME


def venv_python(venv: Path | str) -> Path:
    """The python interpreter of a venv."""
    return Path(venv) / "bin" / "python"


def letta_executable(venv: Path | str) -> Path:
    """The `letta` console script of a venv."""
    return Path(venv) / "bin" / "letta"


def _marker(venv: Path | str) -> Path:
    return Path(venv) / MARKER_NAME


def installed_version(venv: Path | str) -> str | None:
    """The Letta version recorded by a completed install, or None if not (fully) installed."""
    try:
        data = json.loads(_marker(venv).read_text())
    except (OSError, ValueError):
        return None
    if not letta_executable(venv).exists() or not venv_python(venv).exists():
        return None
    version = data.get("letta")
    return version if isinstance(version, str) else None


def is_installed(venv: Path | str, version: str = LETTA_VERSION) -> bool:
    """True when `venv` holds a completed install of Letta `version`."""
    return installed_version(venv) == version


def _run(
    argv: Sequence[str],
    what: str,
    progress: Progress,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    tail: int = 40,
) -> None:
    """Run a command, stream its lines to a bounded buffer, raise LettaSetupError on failure."""
    last: deque[str] = deque(maxlen=tail)
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=cwd,
        )
    except OSError as exc:
        raise LettaSetupError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    assert proc.stdout is not None
    collecting = ""
    for line in proc.stdout:
        line = line.rstrip()
        last.append(line)
        # Surface pip's coarse milestones; everything else stays in the tail buffer.
        if line.startswith("Collecting ") and not collecting:
            collecting = line
            progress(f"{what}: resolving packages")
        elif line.startswith("Installing collected packages"):
            progress(f"{what}: installing packages")
    rc = proc.wait()
    if rc != 0:
        out = "\n".join(last)
        raise LettaSetupError(f"{what} failed (exit {rc}). Last output:\n{out}")


def install_letta(
    venv: Path | str,
    progress: Progress | None = None,
    *,
    python: str | None = None,
    force: bool = False,
    extra_packages: Sequence[str] = EXTRA_PACKAGES,
) -> bool:
    """Create `venv` and install `letta[server]==0.16.8` into it with the release's pins.

    Returns False when a completed install is already there (nothing done), True otherwise.
    `python` is the interpreter that creates the venv (default: this interpreter's base).
    Raises LettaSetupError with the tail of pip's output on failure.
    """
    progress = progress or _noop
    venv = Path(venv).absolute()
    if not force and is_installed(venv):
        progress(f"letta {LETTA_VERSION} already installed in {venv}")
        return False
    constraints = constraints_file()
    if not constraints.is_file():
        raise LettaSetupError(f"constraints file missing: {constraints}")
    started = time.monotonic()
    _marker(venv).unlink(missing_ok=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    if not venv_python(venv).exists():
        progress(f"creating virtual environment {venv}")
        venv.parent.mkdir(parents=True, exist_ok=True)
        base = python or getattr(sys, "_base_executable", None) or sys.executable
        _run([base, "-m", "venv", str(venv)], "creating the Letta venv", progress, env=env)
    py = str(venv_python(venv))
    progress(f"upgrading pip to {PIP_VERSION}")
    _run([py, "-m", "pip", "install", "-q", f"pip=={PIP_VERSION}"], "upgrading pip", progress,
         env=env)
    progress(f"installing letta[server]=={LETTA_VERSION} (about 2 minutes)")
    _run(
        [py, "-m", "pip", "install", "--progress-bar", "off", "-c", str(constraints),
         f"letta[server]=={LETTA_VERSION}", *extra_packages],
        f"pip install letta[server]=={LETTA_VERSION}",
        progress,
        env=env,
    )
    if not letta_executable(venv).exists():
        raise LettaSetupError(f"pip finished but {letta_executable(venv)} is missing")
    elapsed = time.monotonic() - started
    _marker(venv).write_text(json.dumps({
        "letta": LETTA_VERSION,
        "pip": PIP_VERSION,
        "packages": list(extra_packages),
        "seconds": round(elapsed, 1),
        "installed_at": time.time(),
    }) + "\n")
    progress(f"letta {LETTA_VERSION} installed in {elapsed:.0f} s")
    return True


def schema_script() -> Path:
    """The schema script, run by file path with Letta's interpreter (it cannot import voicectl)."""
    return Path(__file__).resolve().parent / "schema.py"


def ensure_schema(
    venv: Path | str,
    pg_uri: str,
    progress: Progress | None = None,
    *,
    home: Path | str | None = None,
    timeout: float = 300.0,
) -> None:
    """Create Letta's tables in the database at `pg_uri` (idempotent; 3-6 s, mostly imports).

    `home` becomes HOME/LETTA_DIR of the script (importing letta writes ~/.letta/logs);
    default: a temporary directory.
    """
    progress = progress or _noop
    py = venv_python(venv)
    if not py.exists():
        raise LettaSetupError(f"Letta venv missing: {venv} (install it first)")
    progress("creating the Letta schema")
    with tempfile.TemporaryDirectory(prefix="voicectl-letta-home-") as tmp:
        home_dir = Path(home) if home is not None else Path(tmp)
        home_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "LETTA_PG_URI": pg_uri, "PYTHONNOUSERSITE": "1",
               "HOME": str(home_dir), "LETTA_DIR": str(home_dir / ".letta")}
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        res = _run_schema(py, pg_uri, env, timeout)
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-30:])
        raise LettaSetupError(f"creating the Letta schema failed (exit {res.returncode}):\n{tail}")
    for line in res.stdout.strip().splitlines()[-1:]:
        progress(line)


def _run_schema(
    py: Path, pg_uri: str, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(py), str(schema_script()), "--uri", pg_uri],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise LettaSetupError(f"creating the Letta schema timed out after {timeout:.0f} s") from exc
