"""Request policy of the console: which Host and Origin headers it serves, and input checks.

No CORS: a request whose `Origin` is present and is not the console's own origin is refused,
and no `Access-Control-*` header is ever sent. The `Host` header must name the machine by IP
literal, `localhost` or the bind host, so a DNS-rebinding page (evil.example resolving to
127.0.0.1) cannot pass itself off as same-origin.
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any
from urllib.parse import urlsplit

from voicectl.errors import UsageError
from voicectl.livekit.api import check_identity, check_room

MAX_BODY_BYTES = 4096
LETTA_AGENT_ID = re.compile(r"^agent-[A-Za-z0-9-]{1,64}$")


class BadRequest(ValueError):
    """Input the API refuses: HTTP `status` with a one-line message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def host_name(host_header: str) -> str | None:
    """The host name of a `Host` header (lower case, IPv6 without brackets), None if malformed."""
    if not host_header or any(c in host_header for c in "/?#@ \t"):
        return None
    try:
        parts = urlsplit("//" + host_header)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return parts.hostname or None


def host_allowed(host_header: str, bind_host: str) -> bool:
    """An IP literal, `localhost`, or the host the server was told to bind."""
    name = host_name(host_header)
    if name is None:
        return False
    if name in ("localhost", bind_host.strip("[]").lower()):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_allowed(origin: str, host_header: str) -> bool:
    """The page's own origin: `http(s)://` + the (already validated) Host header."""
    return origin.lower() in (f"http://{host_header}".lower(), f"https://{host_header}".lower())


def _string(body: dict[str, Any], key: str, required: bool) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise BadRequest(f"missing field {key!r}")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"field {key!r} must be a string")
    return value


def check_fields(body: Any, allowed: set[str]) -> dict[str, Any]:
    """A JSON object with only the allowed keys."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unexpected field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    return body


def token_request(body: Any) -> tuple[str, str]:
    """`{room, identity}` of POST /api/token, validated."""
    body = check_fields(body, {"room", "identity"})
    room = _string(body, "room", True)
    identity = _string(body, "identity", True)
    try:
        return check_room(room), check_identity(identity)
    except UsageError as exc:
        raise BadRequest(str(exc)) from None


def dispatch_request(body: Any) -> tuple[str, str | None]:
    """`{room, letta_agent_id}` of POST /api/dispatch-agent; the agent id may be omitted."""
    body = check_fields(body, {"room", "letta_agent_id"})
    room = _string(body, "room", True)
    agent_id = _string(body, "letta_agent_id", False)
    try:
        check_room(room)
    except UsageError as exc:
        raise BadRequest(str(exc)) from None
    if agent_id is not None and not LETTA_AGENT_ID.match(agent_id):
        raise BadRequest(
            f"invalid letta_agent_id {agent_id[:80]!r}: expected agent-<id> "
            "(letters, digits and dashes)"
        )
    return room, agent_id


def why_request(query: Any) -> tuple[str, float]:
    """`?room=R&since=T` of GET /api/dispatch-why: a room name, a Unix time of the last day."""
    room = query.get("room")
    if not room:
        raise BadRequest("missing query parameter 'room'")
    try:
        check_room(room)
    except UsageError as exc:
        raise BadRequest(str(exc)) from None
    raw = query.get("since")
    if raw is None:
        raise BadRequest("missing query parameter 'since'")
    try:
        since = float(raw)
    except ValueError:
        raise BadRequest(f"invalid since {raw[:40]!r}: Unix seconds expected") from None
    now = time.time()
    if not now - 86400 <= since <= now + 60:
        raise BadRequest(f"invalid since {raw[:40]!r}: not within the last day")
    return room, since
