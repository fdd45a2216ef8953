"""LiveKit operations: explicit agent dispatch, dispatch listing, join tokens (livekit-api)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from agent.config import Settings
from agent.events import find_since
from voicectl.errors import UsageError, VoicectlError

T = TypeVar("T")

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@=+-]{0,127}$")
IDENTITY = re.compile(r"^[^\s/\\]{1,128}$")


def check_room(room: str) -> str:
    """A room name LiveKit accepts and a shell user can type back; else exit 2."""
    if not ROOM_NAME.match(room):
        raise UsageError(
            f"invalid room name {room!r}: use 1-128 letters, digits and _ . : @ = + -, "
            "starting with a letter or digit"
        )
    return room


def check_identity(identity: str) -> str:
    if not IDENTITY.match(identity):
        raise UsageError(f"invalid identity {identity!r}: 1-128 characters, no spaces or slashes")
    return identity


def parse_metadata(text: str | None) -> str:
    """Job metadata must be JSON (the agent reads it as such); returned compact."""
    if text is None:
        return ""
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError as exc:
        raise UsageError(f"--metadata is not valid JSON: {exc}") from None


def parse_ttl(text: str) -> timedelta:
    """`90s`, `10m`, `6h`, `1d` or plain seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"invalid --ttl {text!r}: use e.g. 90s, 10m, 6h, 1d")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return timedelta(seconds=float(m.group(1)) * unit)


async def run_async(settings: Settings, call: Callable[[object], Awaitable[T]],
                    lkapi: object | None = None) -> T:
    """Run one call with a LiveKitAPI client (`lkapi`, else one made and closed here).

    Twirp and connection errors become a one-line VoicectlError, as for the CLI.
    """
    from livekit import api

    async def main() -> T:
        if lkapi is not None:
            return await call(lkapi)
        client = api.LiveKitAPI(
            settings.livekit_http_url, settings.livekit_api_key, settings.livekit_api_secret
        )
        try:
            return await call(client)
        finally:
            await client.aclose()

    try:
        return await main()
    except api.TwirpError as exc:
        if exc.status == 401:
            raise VoicectlError(
                "LiveKit rejected the credentials (HTTP 401): check LIVEKIT_API_KEY and "
                "LIVEKIT_API_SECRET"
            ) from None
        raise VoicectlError(f"LiveKit refused: {exc.code}: {exc.message}") from None
    except (TimeoutError, OSError) as exc:
        raise VoicectlError(f"cannot reach LiveKit at {settings.livekit_http_url}: {exc}") from None
    except Exception as exc:  # aiohttp's client errors are not OSErrors
        if type(exc).__module__.startswith("aiohttp"):
            raise VoicectlError(
                f"cannot reach LiveKit at {settings.livekit_http_url}: {exc}"
            ) from None
        raise


def _run(settings: Settings, call: Callable[[object], Awaitable[T]]) -> T:
    """Run one call with a LiveKitAPI client; Twirp and connection errors become one line."""
    return asyncio.run(run_async(settings, call))


def _dispatch_call(room: str, agent_name: str, metadata: str,
                   create_room: bool) -> Callable[[object], Awaitable[dict]]:
    from livekit import api

    async def call(lkapi: api.LiveKitAPI) -> dict:
        rooms = await lkapi.room.list_rooms(api.ListRoomsRequest(names=[room]))
        existed = any(r.name == room for r in rooms.rooms)
        if create_room and not existed:
            await lkapi.room.create_room(api.CreateRoomRequest(name=room))
        d = await lkapi.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
        )
        return {
            "dispatch_id": d.id,
            "room": d.room or room,
            "agent_name": d.agent_name or agent_name,
            "metadata": d.metadata,
            "room_existed": existed,
            "room_created": create_room and not existed,
        }

    return call


def dispatch(settings: Settings, room: str, agent_name: str, metadata: str,
             create_room: bool) -> dict:
    """Create an explicit dispatch; reports whether the room existed before."""
    return _run(settings, _dispatch_call(room, agent_name, metadata, create_room))


async def dispatch_async(settings: Settings, room: str, agent_name: str, metadata: str,
                         create_room: bool, lkapi: object | None = None) -> dict:
    """`dispatch` for a running event loop, optionally with a long-lived LiveKitAPI client."""
    return await run_async(settings, _dispatch_call(room, agent_name, metadata, create_room),
                           lkapi)


async def _list_rooms_call(lkapi: object) -> list[str]:
    from livekit import api

    return [r.name for r in (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms]


def list_rooms(settings: Settings) -> list[str]:
    """Names of the server's rooms (also a cheap check that the credentials work)."""
    return _run(settings, _list_rooms_call)


async def list_rooms_async(settings: Settings, lkapi: object | None = None) -> list[str]:
    """`list_rooms` for a running event loop."""
    return await run_async(settings, _list_rooms_call, lkapi)


def list_dispatches(settings: Settings, room: str) -> list[dict]:
    from livekit import api

    async def call(lkapi: api.LiveKitAPI) -> list[dict]:
        found = await lkapi.agent_dispatch.list_dispatch(room)
        return [
            {"dispatch_id": d.id, "room": d.room, "agent_name": d.agent_name,
             "metadata": d.metadata, "jobs": len(d.state.jobs) if d.HasField("state") else 0}
            for d in found
        ]

    return _run(settings, call)


def delete_dispatch(settings: Settings, room: str, dispatch_id: str) -> dict:
    from livekit import api

    async def call(lkapi: api.LiveKitAPI) -> dict:
        d = await lkapi.agent_dispatch.delete_dispatch(dispatch_id, room)
        return {"dispatch_id": d.id or dispatch_id, "room": room, "deleted": True}

    return _run(settings, call)


def wait_for_job(settings: Settings, room: str, since: float, timeout: float,
                 poll: float = 0.1) -> dict | None:
    """The agent's `job` event for this room after `since` (accepted, or why not); None when
    none came within `timeout` (voicectl.livekit.dispatch_why then says why)."""
    deadline = time.monotonic() + timeout
    while True:
        event = find_since(
            settings.events_path, since, lambda r: r["event"] == "job" and r.get("room") == room
        )
        if event is not None:
            return event
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll)


def join_token(settings: Settings, room: str, identity: str, ttl: timedelta,
               name: str | None = None) -> dict:
    """A join token for a browser or a test client."""
    from livekit import api

    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                             can_publish_data=True)
    token = (
        api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(identity)
        .with_name(name or identity)
        .with_grants(grants)
        .with_ttl(ttl)
        .to_jwt()
    )
    return {
        "token": token,
        "url": settings.livekit_url,
        "room": room,
        "identity": identity,
        "expires_at": round(time.time() + ttl.total_seconds()),
    }
