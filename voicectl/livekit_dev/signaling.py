"""The signal WebSocket ``/rtc``: join, then SignalRequest → SignalResponse until leave.

How the official SDKs connect (measured against them): they try ``/rtc/v1`` (one peer
connection) first and fall back to ``/rtc`` only on a 404 — the browser only when ``GET
/rtc/v1/validate`` answers 404 *and* carries CORS headers — so both answer 404 here. The token
comes as ``Authorization: Bearer`` (native SDKs) or ``?access_token=`` (browsers): query strings
are never logged. JoinResponse is the first message; ``subscriber_primary`` makes the server
the offerer of the subscriber connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Protocol

from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError
from livekit.protocol import models as models_pb
from livekit.protocol import rtc as rtc_pb

from voicectl.livekit_dev.auth import Auth, AuthError, authenticate
from voicectl.livekit_dev.config import PING_TIMEOUT_S
from voicectl.livekit_dev.ids import now_ms

if TYPE_CHECKING:
    from voicectl.livekit_dev.config import DevConfig
    from voicectl.livekit_dev.participant import Participant

log = logging.getLogger("livekit-dev.signal")

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
}


class SignalingHost(Protocol):
    """What signaling asks of the server (server.DevServer): a protocol, so that the server
    may import this module without this one importing it back."""

    config: DevConfig

    async def join(self, auth: Auth, conn: SignalConnection, *, auto_subscribe: bool,
                   client_protocol: int, sdk: str) -> Participant | None: ...

    async def disconnect(self, p: Participant, reason: int, *, notify: bool = True,
                         can_reconnect: bool = False) -> None: ...

    async def add_track(self, p: Participant, req: rtc_pb.AddTrackRequest) -> None: ...

    async def mute_track(self, p: Participant, track_sid: str, muted: bool) -> None: ...

    async def publisher_renegotiated(self, p: Participant) -> None: ...

    async def subscriber_answered(self, p: Participant, track_sids: set[str]) -> None: ...

    async def update_subscription(self, p: Participant, req: rtc_pb.UpdateSubscription
                                  ) -> None: ...

    async def update_metadata(self, p: Participant, req: rtc_pb.UpdateParticipantMetadata
                              ) -> None: ...


class SignalConnection:
    """One participant's signal socket; sends are serialized."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send(self, msg: rtc_pb.SignalResponse) -> None:
        if self.ws.closed:
            return
        async with self._lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(msg.SerializeToString())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.lower() in ("1", "true", "yes")


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


class Signaling:
    """The ``/rtc`` handlers; what a message does to the room is the server's."""

    def __init__(self, server: SignalingHost) -> None:
        self.server = server

    async def not_found_v1(self, request: web.Request) -> web.Response:
        """``/rtc/v1`` and ``/rtc/v1/validate``: 404, so SDKs use the two-connection ``/rtc``."""
        return web.Response(status=404, text="404 page not found", headers=CORS)

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=CORS)

    def _join_auth(self, request: web.Request) -> Auth:
        try:
            auth = authenticate(self.server.config.keys, request)
        except AuthError as exc:
            raise web.HTTPUnauthorized(text=str(exc), headers=CORS) from None
        if auth is None:
            raise web.HTTPUnauthorized(text="no access token", headers=CORS)
        video = auth.video
        if not (video and video.room_join and video.room):
            raise web.HTTPUnauthorized(text="permissions denied: the token has no roomJoin "
                                       "grant for a room", headers=CORS)
        return auth

    async def validate(self, request: web.Request) -> web.Response:
        """``GET /rtc/validate``: the reason a join would fail, in plain text."""
        self._join_auth(request)
        return web.Response(text="success", headers=CORS)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /rtc``: upgrade, join, then serve signal requests until the socket closes."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=400, text="expected a WebSocket upgrade", headers=CORS)
        auth = self._join_auth(request)
        query = request.query
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        conn = SignalConnection(ws)
        if _flag(query.get("reconnect"), False):
            # A resume needs ICE restarts, which aiortc cannot do: ask for a full reconnect.
            log.info("resume refused (full reconnect asked) identity=%s", auth.claims.identity)
            leave = rtc_pb.LeaveRequest(
                can_reconnect=True, reason=models_pb.DisconnectReason.STATE_MISMATCH,
                action=rtc_pb.LeaveRequest.RECONNECT)
            await conn.send(rtc_pb.SignalResponse(leave=leave))
            await conn.close()
            return ws
        participant = await self.server.join(
            auth, conn,
            auto_subscribe=_flag(query.get("auto_subscribe"), True),
            # `protocol` is the signal protocol (16-18); `client_protocol` (JS: 2) the one agents
            # read from ParticipantInfo to choose how to send transcriptions
            client_protocol=_int(query.get("client_protocol")),
            sdk=f"{query.get('sdk', '')} {query.get('version', '')}".strip(),
        )
        if participant is None:
            await conn.close()
            return ws
        try:
            await self._serve(participant, conn)
        finally:
            if participant.signal is conn:
                await self.server.disconnect(
                    participant, models_pb.DisconnectReason.CLIENT_INITIATED, notify=False)
        return ws

    async def _serve(self, participant: Participant, conn: SignalConnection) -> None:
        while True:
            try:
                msg = await conn.ws.receive(timeout=PING_TIMEOUT_S * 1.5)
            except TimeoutError:
                log.info("participant %s: no ping in time, closing", participant.identity)
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                            WSMsgType.ERROR):
                return
            if msg.type != WSMsgType.BINARY:
                continue
            try:
                req = rtc_pb.SignalRequest.FromString(msg.data)
            except DecodeError:
                log.warning("participant %s sent an unreadable frame", participant.identity)
                continue
            if not await self._on_request(participant, conn, req):
                return

    async def _on_request(
        self, p: Participant, conn: SignalConnection, req: rtc_pb.SignalRequest
    ) -> bool:
        """One request; False ends the session (leave)."""
        which = req.WhichOneof("message")
        server = self.server
        if which == "offer" and p.publisher is not None:
            await p.publisher.on_offer(req.offer)
            await server.publisher_renegotiated(p)
        elif which == "answer" and p.subscriber is not None:
            await server.subscriber_answered(p, await p.subscriber.on_answer(req.answer))
        elif which == "trickle":
            peer = p.subscriber if req.trickle.target == rtc_pb.SUBSCRIBER else p.publisher
            if peer is not None:
                await peer.add_candidate(req.trickle.candidateInit)
        elif which == "add_track":
            await server.add_track(p, req.add_track)
        elif which == "mute":
            await server.mute_track(p, req.mute.sid, req.mute.muted)
        elif which == "subscription":
            await server.update_subscription(p, req.subscription)
        elif which == "update_metadata":
            await server.update_metadata(p, req.update_metadata)
        elif which == "ping_req":
            pong = rtc_pb.Pong(last_ping_timestamp=req.ping_req.timestamp, timestamp=now_ms())
            await conn.send(rtc_pb.SignalResponse(pong_resp=pong))
        elif which == "ping":
            await conn.send(rtc_pb.SignalResponse(pong=now_ms()))
        elif which == "leave":
            log.info("participant %s left", p.identity)
            await server.disconnect(p, models_pb.DisconnectReason.CLIENT_INITIATED, notify=False)
            return False
        else:
            # track_setting, update_layers, subscription_permission, sync_state, simulate...:
            # an SFU's concerns this server does not have
            log.debug("participant %s: %s ignored", p.identity, which)
        return True
