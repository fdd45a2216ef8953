"""The `letta` service, built whole in one place: an external server (probed, never started),
a `VOICECTL_LETTA_CMD` command, or the managed Letta 0.16.8 server on its own Postgres."""

from __future__ import annotations

from agent.config import Settings
from voicectl.letta import managed as managed_letta
from voicectl.letta.health import check_health
from voicectl.services.overrides import command_override
from voicectl.services.probes import ProbeResult
from voicectl.services.spec import Probe, ServiceSpec

START_TIMEOUT = 120.0
MANAGED_START_TIMEOUT = 180.0  # the first start creates the schema


def letta_probe(settings: Settings) -> Probe:
    """Ready when Letta's health endpoint answers (letta/health.py judges it)."""

    def probe(_pid: int | None, _since: float) -> ProbeResult:
        health = check_health(settings.letta_server_url, settings.letta_api_key)
        return ProbeResult(health.ok, health.detail)

    return probe


def letta_spec(settings: Settings) -> ServiceSpec:
    """The letta service of this configuration."""
    name, url, probe = "letta", settings.letta_server_url, letta_probe(settings)
    override = command_override(settings, "letta")
    if override is not None:
        return ServiceSpec(name=name, argv=override, url=url, probe=probe,
                           ports=[settings.letta_port], start_timeout=START_TIMEOUT)
    if settings.letta_managed:
        return ServiceSpec(
            name=name,
            argv=managed_letta.server_argv(settings),
            url=url,
            probe=probe,
            ports=[settings.letta_port],
            depends_on=("postgres",),
            start_timeout=MANAGED_START_TIMEOUT,
            env=managed_letta.server_env(settings),
            cwd=managed_letta.server_cwd(settings),
            prepare=lambda progress: managed_letta.prepare_database(settings, progress),
        )
    return ServiceSpec(name=name, argv=None, url=url, probe=probe, start_timeout=START_TIMEOUT)
