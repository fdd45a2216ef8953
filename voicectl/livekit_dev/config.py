"""Settings of one dev server process, and the real server's constants they default to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SERVER_VERSION = "1.13.0"  # the livekit-server behaviour this follows
SIGNAL_PROTOCOL = 16
AGENT_PROTOCOL = 1
DEFAULT_PORT = 7880
DEV_KEY, DEV_SECRET = "devkey", "secret"  # what `livekit-server --dev` accepts
REGISTER_TIMEOUT = 10.0  # pkg/agent: RegisterTimeout
AVAILABILITY_TIMEOUT = 2.8  # psrpc's 3 s request timeout, less the server's own overhead
TARGET_LOAD = 0.7  # no job is offered to a worker at or above this load
AGENT_TOKEN_TTL_S = 3600
EMPTY_TIMEOUT_S = 300  # a room nobody joined closes after this
DEPARTURE_TIMEOUT_S = 20  # ... and this long after its last participant left
PING_INTERVAL_S, PING_TIMEOUT_S = 10, 20
MISSING_ROOM_DELAY = 3.0  # psrpc retries before a dispatch call on a missing room fails


@dataclass
class DevConfig:
    """What ``main`` parsed: where to listen, which keys, and the (shortenable) timeouts."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    keys: dict[str, str] = field(default_factory=lambda: {DEV_KEY: DEV_SECRET})
    state_file: Path | None = None
    availability_timeout: float = AVAILABILITY_TIMEOUT
    empty_timeout: float = EMPTY_TIMEOUT_S
    departure_timeout: float = DEPARTURE_TIMEOUT_S
    missing_room_delay: float = MISSING_ROOM_DELAY
    target_load: float = TARGET_LOAD
    redispatch_on_register: bool = False
    #: dev-only: seconds each named Twirp method (e.g. ListParticipants) waits before answering
    twirp_delays: dict[str, float] = field(default_factory=dict)
    #: addresses offered to WebRTC peers; empty: every interface aioice finds, plus loopback
    ice_hosts: list[str] = field(default_factory=list)
