"""Managed Letta (LETTA_MODE=managed): the postgres and letta services voicectl runs itself.

First use installs Letta 0.16.8 into its own virtual environment, initialises the embedded
PostgreSQL and creates the schema; later runs find each step done and skip it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from agent.config import Settings
from voicectl.errors import VoicectlError
from voicectl.letta import install as letta_install
from voicectl.letta import postgres
from voicectl.letta import server as letta_server
from voicectl.services.catalog import ServiceSpec, command_override
from voicectl.services.probes import ProbeResult

Progress = Callable[[str], None]


def venv_path(settings: Settings) -> Path:
    """Letta's own virtual environment."""
    if settings.letta_venv:
        return Path(settings.letta_venv).expanduser().resolve()
    return letta_server.letta_paths(settings.home).venv


def pg_dir(settings: Settings) -> Path:
    return letta_server.letta_paths(settings.home).pg


def _schema_marker(settings: Settings) -> Path:
    return pg_dir(settings) / f"schema-letta-{letta_install.LETTA_VERSION}.done"


def install(settings: Settings, progress: Progress) -> None:
    """Everything that can be done ahead of time: Letta's venv and the Postgres cluster."""
    try:
        letta_install.install_letta(venv_path(settings), progress)
        postgres.ensure_initialized(pg_dir(settings), settings.letta_pg_port, progress)
    except letta_install.LettaSetupError as exc:
        raise VoicectlError(f"letta setup: {_first_line(exc)}") from None


def prepare_database(settings: Settings, progress: Progress) -> None:
    """With Postgres up: role, database, extension and Letta's schema (once)."""
    pgd, port = pg_dir(settings), settings.letta_pg_port
    try:
        letta_server.letta_paths(settings.home).ensure()  # HOME, LETTA_DIR and the cwd
        letta_install.install_letta(venv_path(settings), progress)
        postgres.ensure_database(pgd, port)
        marker = _schema_marker(settings)
        if not marker.exists():
            letta_install.ensure_schema(
                venv_path(settings), postgres.uri(pgd, port), progress,
                home=letta_server.letta_paths(settings.home).home,
            )
            marker.write_text("ok\n")
    except letta_install.LettaSetupError as exc:
        raise VoicectlError(f"letta setup: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def postgres_spec(settings: Settings) -> ServiceSpec:
    """PostgreSQL 16 + pgvector from the pgserver wheel, on a port of its own."""
    pgd, port = pg_dir(settings), settings.letta_pg_port
    try:
        argv = command_override(settings, "postgres") or postgres.server_argv(pgd, port)
    except letta_install.LettaSetupError as exc:
        argv = ["pgserver-missing"]
        detail = _first_line(exc)
    else:
        detail = ""

    def probe(_pid: int | None, _since: float) -> ProbeResult:
        if detail:
            return ProbeResult(False, detail)
        if postgres.is_ready(pgd, port):
            return ProbeResult(True, f"postgres on 127.0.0.1:{port}")
        return ProbeResult(False, f"postgres on :{port} not accepting connections")

    def prepare(progress: Progress) -> None:
        try:
            postgres.ensure_initialized(pgd, port, progress)
        except letta_install.LettaSetupError as exc:
            raise VoicectlError(f"postgres setup: {_first_line(exc)}") from None

    return ServiceSpec(
        name="postgres",
        argv=argv,
        probe=probe,
        url=f"postgresql://127.0.0.1:{port}/letta",
        ports=[port],
        start_timeout=60.0,
        prepare=prepare,
        spawn_kwargs=postgres.popen_user_kwargs,
        stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM waits for every client
    )


def configure_letta(spec: ServiceSpec, settings: Settings) -> None:
    """Turn the letta spec into the managed server: command, environment, cwd, prepare."""
    pgd, port = pg_dir(settings), settings.letta_pg_port
    spec.argv = letta_server.server_argv(venv_path(settings), "127.0.0.1", settings.letta_port)
    spec.env = letta_server.server_env(
        settings.home, postgres.uri(pgd, port), settings.openai_api_key,
        settings.openai_base_url,
    )
    spec.cwd = letta_server.server_cwd(settings.home)
    spec.ports = [settings.letta_port]
    spec.depends_on = ("postgres",)
    spec.prepare = lambda progress: prepare_database(settings, progress)
    spec.start_timeout = 180.0
