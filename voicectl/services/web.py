"""The `web` service: the browser console (`python -m voicectl.web`)."""

from __future__ import annotations

import sys

from agent.config import Settings
from voicectl.services.overrides import command_override
from voicectl.services.spec import ServiceSpec
from voicectl.web.probe import probe_web


def web_spec(settings: Settings) -> ServiceSpec:
    """Ready when `/api/health?deps=0` names the console."""
    port = settings.web_port
    return ServiceSpec(
        name="web",
        argv=command_override(settings, "web") or [sys.executable, "-m", "voicectl.web"],
        url=f"http://127.0.0.1:{port}/",
        ports=[port],
        probe=lambda _pid, _since: probe_web(port, settings.web_host),
        start_timeout=20.0,
    )
