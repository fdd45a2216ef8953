"""The `livekit` service: the server livekit/choice.py picks (binary, embedded, a command, or
an external one that is only probed)."""

from __future__ import annotations

from agent.config import Settings
from voicectl.livekit.choice import choose as choose_livekit
from voicectl.services.probes import probe_text
from voicectl.services.spec import ServiceSpec


def livekit_spec(settings: Settings) -> ServiceSpec:
    """LiveKit answers `OK` on `/` once it serves."""
    choice = choose_livekit(settings)
    return ServiceSpec(
        name="livekit",
        argv=choice.argv,
        url=settings.livekit_url,
        probe=lambda _pid, _since: probe_text(settings.livekit_http_url + "/", "OK"),
        ports=[] if choice.argv is None else [settings.livekit_port],
        start_timeout=30.0,
        env=dict(choice.env),
        server=choice,
    )
