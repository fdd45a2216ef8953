"""The `postgres` service of managed Letta: PostgreSQL 16 + pgvector from the pgserver wheel,
on a port of its own."""

from __future__ import annotations

import signal

from agent.config import Settings
from voicectl.errors import VoicectlError, first_line
from voicectl.letta import install as letta_install
from voicectl.letta import managed as managed_letta
from voicectl.letta import postgres
from voicectl.services.overrides import command_override
from voicectl.services.probes import ProbeResult
from voicectl.services.spec import ServiceSpec


def postgres_spec(settings: Settings) -> ServiceSpec:
    """Initialised before each start; ready when it accepts connections; stopped with SIGINT."""
    pgd, port = managed_letta.pg_dir(settings), settings.letta_pg_port
    try:
        argv = command_override(settings, "postgres") or postgres.server_argv(pgd, port)
    except letta_install.LettaSetupError as exc:
        argv = ["pgserver-missing"]
        detail = first_line(exc)
    else:
        detail = ""

    def probe(_pid: int | None, _since: float) -> ProbeResult:
        if detail:
            return ProbeResult(False, detail)
        if postgres.is_ready(pgd, port):
            return ProbeResult(True, f"postgres on 127.0.0.1:{port}")
        return ProbeResult(False, f"postgres on :{port} not accepting connections")

    def prepare(progress: managed_letta.Progress) -> None:
        try:
            postgres.ensure_initialized(pgd, port, progress)
        except letta_install.LettaSetupError as exc:
            raise VoicectlError(f"postgres setup: {first_line(exc)}") from None

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
