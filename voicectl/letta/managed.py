"""Managed Letta (LETTA_MODE=managed): the Letta server and Postgres voicectl runs itself.

Where their files live, installing them, and the managed server's command and environment (the
services built from them are services/letta.py and services/postgres.py). First use installs
Letta 0.16.8 into its own virtual environment, initialises the embedded PostgreSQL and creates
the schema; later runs find each step done and skip it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.config import Settings
from voicectl.errors import VoicectlError, first_line
from voicectl.letta import install as letta_install
from voicectl.letta import postgres
from voicectl.letta import server as letta_server

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
        raise VoicectlError(f"letta setup: {first_line(exc)}") from None


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
        raise VoicectlError(f"letta setup: {first_line(exc)}") from None


def server_argv(settings: Settings) -> list[str]:
    """The managed server's command, from Letta's own venv, on 127.0.0.1:LETTA_PORT."""
    return letta_server.server_argv(venv_path(settings), "127.0.0.1", settings.letta_port)


def server_env(settings: Settings) -> dict[str, str]:
    """The managed server's environment: its state-dir HOME, the Postgres URI, the OpenAI
    endpoint."""
    pg_uri = postgres.uri(pg_dir(settings), settings.letta_pg_port)
    return letta_server.server_env(settings.home, pg_uri, settings.openai_api_key,
                                   settings.openai_base_url)


def server_cwd(settings: Settings) -> Path:
    """The managed server's working directory."""
    return letta_server.server_cwd(settings.home)
