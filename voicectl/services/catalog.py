"""The services of a configuration, in start order, and choosing among them."""

from __future__ import annotations

from agent.config import Settings
from voicectl.errors import UsageError
from voicectl.services.agent import agent_spec
from voicectl.services.letta import letta_spec
from voicectl.services.livekit import livekit_spec
from voicectl.services.local import local_specs
from voicectl.services.overrides import command_override
from voicectl.services.postgres import postgres_spec
from voicectl.services.spec import ServiceSpec
from voicectl.services.web import web_spec

SERVICE_ORDER = ("llm", "embeddings", "livekit", "postgres", "letta", "agent", "web")


def build_services(settings: Settings) -> dict[str, ServiceSpec]:
    """All services of this configuration, in start order."""
    specs = [livekit_spec(settings), letta_spec(settings), agent_spec(settings),
             web_spec(settings)]
    if settings.letta_managed and command_override(settings, "letta") is None:
        specs.insert(1, postgres_spec(settings))
    if settings.local_mode:
        specs[:0] = local_specs(settings)
    return {spec.name: spec for spec in specs}


def select(services: dict[str, ServiceSpec], names: list[str], with_deps: bool) -> list[str]:
    """Validate service names; optionally add their dependencies; keep start order."""
    unknown = [n for n in names if n not in services]
    if unknown:
        raise UsageError(
            f"unknown service {unknown[0]!r} (choose from {', '.join(services)})"
        )
    chosen = set(names or services)
    if with_deps:
        stack = list(chosen)
        while stack:
            for dep in services[stack.pop()].depends_on:
                if dep in services and dep not in chosen:
                    chosen.add(dep)
                    stack.append(dep)
    return [n for n in services if n in chosen]
