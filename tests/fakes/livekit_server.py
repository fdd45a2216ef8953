"""Fake LiveKit server for tests: the real server's API and agent-worker protocols, no media.

The Go ``livekit-server`` cannot be installed on these machines, so this module stands in for
it. It follows the real server's behaviour as read from its source (``pkg/service``,
``pkg/agent``, ``pkg/rtc/room.go``), because voicectl must work against the real one.

What it serves:

* ``GET /`` answers ``200 OK`` (the readiness probe).
* Twirp: ``POST /twirp/livekit.RoomService/<Method>`` (CreateRoom, ListRooms, DeleteRoom,
  ListParticipants, GetParticipant, RemoveParticipant, UpdateRoomMetadata) and
  ``POST /twirp/livekit.AgentDispatchService/<Method>`` (CreateDispatch, ListDispatch,
  DeleteDispatch), with ``application/protobuf`` or ``application/json`` bodies. Other methods
  of those services answer ``unimplemented``; any other path under ``/twirp`` ``bad_route``.
* Auth, as the real server does it: ``Authorization: Bearer <jwt>`` (or ``?access_token=``),
  checked with livekit-api's ``TokenVerifier``. An unknown API key or a bad signature is HTTP
  401 with a *plain-text* body, so livekit-api raises ``ServerError(code="unknown",
  status=401)``. A missing token or a missing grant is the Twirp error ``unauthenticated``
  (HTTP 401, "permissions denied"); the real server never answers ``permission_denied`` here.
  Grants: roomCreate (CreateRoom, DeleteRoom), roomList (ListRooms), roomAdmin for the same room
  (participants, metadata, every dispatch call).
* Worker WebSocket ``GET /agent`` (token with the ``agent`` grant, else 401): protobuf (binary)
  or protojson (text) ``WorkerMessage`` / ``ServerMessage``. RegisterWorkerRequest →
  RegisterWorkerResponse (``AW_…``); WorkerPing → WorkerPong; UpdateWorkerStatus;
  AvailabilityResponse; UpdateJobStatus; MigrateJobRequest; SimulateJobRequest.

Dispatch semantics (the real server's):

* Creating a room (CreateRoom, or CreateDispatch into a missing room) creates its room
  dispatches: the request's ``agents``, else one default dispatch with an *empty* agent name,
  served only by workers registered without an agent name. So ListDispatch after CreateDispatch
  into a new room shows two dispatches.
* An explicit dispatch goes to workers registered with exactly its agent name. Its job
  (``AJ_…``) is offered with an AvailabilityRequest to one available worker at a time (one with
  running jobs and the highest load first, else the first registered). A decline tries the next
  worker; ``terminate`` or no answer within 10 s ends the attempt. An accept gets a
  JobAssignment with an agent token (``kind=agent``, roomJoin, agent, the worker's permissions,
  attribute ``lk.agent_name``) and an empty ``url`` (the worker then uses its own LIVEKIT_URL).
  ListDispatch shows assigned jobs with the state they had at assignment (``JS_RUNNING``).
* With no available worker the job is dropped ("not dispatching agent job since no worker is
  available"); a worker registering later does NOT pick it up. ``--redispatch-on-register``
  (fake only, off by default) relaunches such dispatches when a matching worker registers.
* DeleteDispatch and DeleteRoom send JobTermination for the jobs they end.

Not implemented: room media. ``/rtc`` (used by ``JobContext.connect()`` and browsers) answers
``501``, is logged and is recorded in the state, so an agent's ``ctx.connect()`` fails against
this fake. No participant ever joins, rooms never expire, and there are no webhooks, egress,
ingress or SIP.

Fake-only: ``GET /_fake/state`` returns JSON (rooms, dispatches, workers, jobs, rtc_attempts)
for tests; the real server has no such endpoint. ``--state-file`` writes the same JSON on every
change. Job states: offered, accepted, declined, running, success, failed, timeout.

Run: ``python -m tests.fakes.livekit_server [--host H] [--port P] [--keys KEY:SECRET]`` from the
repository root, or ``python tests/fakes/livekit_server.py ...``. SIGTERM/SIGINT exit 0. Tests
start it with :func:`start_fake_livekit`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jwt
from aiohttp import WSMsgType, web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from jwt.warnings import InsecureKeyLengthWarning
from livekit.api.access_token import AccessToken, Claims, TokenVerifier, VideoGrants
from livekit.protocol import agent as agent_pb
from livekit.protocol import agent_dispatch as dispatch_pb
from livekit.protocol import models as models_pb
from livekit.protocol import room as room_pb

log = logging.getLogger("fake-livekit")

FAKE_SERVER_VERSION = "1.9.0"
SIGNAL_PROTOCOL = 16
AGENT_PROTOCOL = 1
DEFAULT_PORT = 7880
DEFAULT_KEY, DEFAULT_SECRET = "devkey", "secret"  # what `livekit-server --dev` uses
REGISTER_TIMEOUT = 10.0  # pkg/agent: RegisterTimeout
AVAILABILITY_TIMEOUT = 10.0  # pkg/agent: AssignJobTimeout
AGENT_TOKEN_TTL_S = 3600
AGENT_NAME_ATTRIBUTE = "lk.agent_name"
DEFAULT_EMPTY_TIMEOUT, DEFAULT_DEPARTURE_TIMEOUT = 300, 20
_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

TWIRP_STATUS = {
    "canceled": 408, "unknown": 500, "invalid_argument": 400, "malformed": 400,
    "deadline_exceeded": 408, "not_found": 404, "bad_route": 404, "already_exists": 409,
    "permission_denied": 403, "unauthenticated": 401, "resource_exhausted": 429,
    "failed_precondition": 412, "aborted": 409, "out_of_range": 400, "unimplemented": 501,
    "internal": 500, "unavailable": 503, "dataloss": 500,
}  # fmt: skip
SERVICES = {
    "livekit.RoomService": room_pb.DESCRIPTOR.services_by_name["RoomService"],
    "livekit.AgentDispatchService": dispatch_pb.DESCRIPTOR.services_by_name["AgentDispatchService"],
}
JOB_STATUS_NAMES = {
    agent_pb.JS_RUNNING: "running",
    agent_pb.JS_SUCCESS: "success",
    agent_pb.JS_FAILED: "failed",
}
ROOM_NOT_FOUND = "requested room does not exist"
PERMISSION_DENIED = "permissions denied"


def new_id(prefix: str) -> str:
    """An id shaped like the server's guids: a prefix and 12 random base57 characters."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


class TwirpError(Exception):
    """A Twirp error: JSON ``{"code", "msg"}`` with the HTTP status of its code."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code, self.msg = code, msg

    def response(self) -> web.Response:
        body = {"code": self.code, "msg": self.msg}
        return web.json_response(body, status=TWIRP_STATUS[self.code])


class AuthError(Exception):
    """A token the auth middleware rejects: HTTP 401 with a plain-text body."""


class WorkerClosedError(Exception):
    """The worker's WebSocket closed while the server waited on it."""


@dataclass
class Auth:
    """A verified token: the API key that signed it and its claims."""

    api_key: str
    claims: Claims


@dataclass
class FakeConfig:
    """Settings of one fake server process."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    keys: dict[str, str] = field(default_factory=lambda: {DEFAULT_KEY: DEFAULT_SECRET})
    state_file: Path | None = None
    availability_timeout: float = AVAILABILITY_TIMEOUT
    redispatch_on_register: bool = False


@dataclass
class FakeRoom:
    """A room: its proto and the ids of its live dispatches."""

    proto: models_pb.Room
    dispatch_ids: list[str] = field(default_factory=list)


@dataclass
class FakeDispatch:
    """An agent dispatch; ``proto.state.jobs`` holds jobs as they were at assignment."""

    proto: dispatch_pb.AgentDispatch
    outcome: str = "launching"  # launching | no_worker | assigned | declined | timeout | failed
    job_ids: list[str] = field(default_factory=list)


@dataclass
class FakeJob:
    """A job offered to workers, and what became of it."""

    proto: agent_pb.Job
    state: str = "offered"
    worker_id: str = ""
    participant_identity: str = ""
    error: str = ""
    terminated: bool = False
    attempts: list[dict[str, str]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.proto.id, "dispatch_id": self.proto.dispatch_id,
            "room": self.proto.room.name, "agent_name": self.proto.agent_name,
            "worker_id": self.worker_id, "state": self.state,
            "participant_identity": self.participant_identity, "error": self.error,
            "terminated": self.terminated, "attempts": list(self.attempts),
            "created_at": self.created_at,
        }  # fmt: skip


@dataclass(eq=False)
class WorkerSession:
    """One worker WebSocket connection and what it registered as."""

    id: str
    ws: web.WebSocketResponse
    api_key: str
    registered: bool = False
    agent_name: str = ""
    job_type: int = agent_pb.JT_ROOM
    version: str = ""
    namespace: str = ""
    permissions: models_pb.ParticipantPermission = field(
        default_factory=models_pb.ParticipantPermission
    )
    status: int = agent_pb.WS_AVAILABLE
    load: float = 0.0
    job_count: int = 0
    use_json: bool = False
    running: set[str] = field(default_factory=set)
    pending: dict[str, asyncio.Future[agent_pb.AvailabilityResponse]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    connected_at: float = field(default_factory=time.time)

    async def send(self, msg: agent_pb.ServerMessage) -> None:
        """Send in the encoding the worker speaks (protobuf, or protojson over text)."""
        async with self.lock:
            if self.use_json:
                await self.ws.send_str(json_format.MessageToJson(msg, indent=None))
            else:
                await self.ws.send_bytes(msg.SerializeToString())

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id, "agent_name": self.agent_name,
            "status": "available" if self.status == agent_pb.WS_AVAILABLE else "full",
            "load": round(self.load, 4), "version": self.version,
            "job_type": agent_pb.JobType.Name(self.job_type), "job_count": self.job_count,
            "running_jobs": sorted(self.running), "connected_at": self.connected_at,
        }  # fmt: skip


# --------------------------------------------------------------------------- auth helpers


def _bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header:
        if not header.startswith("Bearer "):
            raise AuthError("invalid authorization header. Must start with Bearer ")
        return header[len("Bearer ") :]
    return request.query.get("access_token") or None


def _video(auth: Auth | None) -> VideoGrants | None:
    return auth.claims.video if auth else None


def require_create(auth: Auth | None) -> None:
    video = _video(auth)
    if not (video and video.room_create):
        raise TwirpError("unauthenticated", PERMISSION_DENIED)


def require_list(auth: Auth | None) -> None:
    video = _video(auth)
    if not (video and video.room_list):
        raise TwirpError("unauthenticated", PERMISSION_DENIED)


def require_admin(auth: Auth | None, room: str) -> None:
    video = _video(auth)
    if not (video and video.room_admin and video.room == room):
        raise TwirpError("unauthenticated", PERMISSION_DENIED)


def _require_room_name(name: str) -> None:
    if not name:
        raise TwirpError("invalid_argument", "room name is required")


def _decode_request(body: bytes, content_type: str, cls: type[Message]) -> Message:
    try:
        if content_type == "application/json":
            return json_format.Parse(body.decode() or "{}", cls(), ignore_unknown_fields=True)
        return cls.FromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
        raise TwirpError("malformed", f"failed to parse request body: {exc}") from None


def _encode_response(msg: Message, content_type: str) -> web.Response:
    if content_type == "application/json":
        text = json_format.MessageToJson(
            msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return web.Response(text=text, content_type="application/json")
    return web.Response(body=msg.SerializeToString(), content_type="application/protobuf")


# --------------------------------------------------------------------------------- server

TwirpHandler = Callable[[Auth | None, Any], Awaitable[Message]]


class FakeLiveKitServer:
    """The fake server's state and its HTTP / WebSocket handlers."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.node_id = new_id("ND_")
        self.rooms: dict[str, FakeRoom] = {}
        self.dispatches: dict[str, FakeDispatch] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.workers: dict[str, WorkerSession] = {}  # registered, in registration order
        self.sessions: set[WorkerSession] = set()
        self.rtc_attempts: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: dict[tuple[str, str], tuple[type[Message], TwirpHandler]] = {
            ("livekit.RoomService", "CreateRoom"): (room_pb.CreateRoomRequest, self.create_room),
            ("livekit.RoomService", "ListRooms"): (room_pb.ListRoomsRequest, self.list_rooms),
            ("livekit.RoomService", "DeleteRoom"): (room_pb.DeleteRoomRequest, self.delete_room),
            ("livekit.RoomService", "ListParticipants"): (
                room_pb.ListParticipantsRequest, self.list_participants),
            ("livekit.RoomService", "GetParticipant"): (
                room_pb.RoomParticipantIdentity, self.get_participant),
            ("livekit.RoomService", "RemoveParticipant"): (
                room_pb.RoomParticipantIdentity, self.remove_participant),
            ("livekit.RoomService", "UpdateRoomMetadata"): (
                room_pb.UpdateRoomMetadataRequest, self.update_room_metadata),
            ("livekit.AgentDispatchService", "CreateDispatch"): (
                dispatch_pb.CreateAgentDispatchRequest, self.create_dispatch),
            ("livekit.AgentDispatchService", "ListDispatch"): (
                dispatch_pb.ListAgentDispatchRequest, self.list_dispatch),
            ("livekit.AgentDispatchService", "DeleteDispatch"): (
                dispatch_pb.DeleteAgentDispatchRequest, self.delete_dispatch),
        }  # fmt: skip
        self.app = self._build_app()

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._access_log])
        app.router.add_get("/", self.handle_root)
        app.router.add_get("/_fake/state", self.handle_state)
        app.router.add_route("*", "/twirp/{service}/{method}", self.handle_twirp)
        app.router.add_get("/agent", self.handle_agent)
        app.router.add_route("*", "/rtc", self.handle_rtc)
        app.router.add_route("*", "/rtc/{tail:.*}", self.handle_rtc)
        return app

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def _access_log(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """One log line per request (except state polling); never logs tokens."""
        start, status = time.perf_counter(), 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if request.path != "/_fake/state":
                ms = (time.perf_counter() - start) * 1000
                log.info("%s %s -> %d (%.1f ms)", request.method, request.path, status, ms)

    def authenticate(self, request: web.Request) -> Auth | None:
        """The real auth middleware: None without a token, AuthError for a bad one."""
        token = _bearer_token(request)
        if not token:
            return None
        try:
            api_key = jwt.decode(token, options={"verify_signature": False}).get("iss", "")
        except jwt.PyJWTError:
            raise AuthError("invalid authorization token") from None
        secret = self.config.keys.get(api_key)
        if not secret:
            raise AuthError(f"invalid API key: {api_key}")
        try:
            return Auth(api_key, TokenVerifier(api_key, secret).verify(token))
        except Exception as exc:  # any PyJWT failure: signature, expiry, issuer
            raise AuthError(f"invalid token, error: {exc}") from None

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def changed(self) -> None:
        """Persist the state file, if one was asked for (atomic replace)."""
        path = self.config.state_file
        if path is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=2))
        os.replace(tmp, path)

    def snapshot(self) -> dict[str, Any]:
        """The fake-only state document served on /_fake/state."""
        return {
            "server": {"node_id": self.node_id, "version": FAKE_SERVER_VERSION},
            "rooms": [self._room_snapshot(r) for r in self.rooms.values()],
            "dispatches": [self._dispatch_snapshot(d) for d in self.dispatches.values()],
            "workers": [w.snapshot() for w in self.workers.values()],
            "jobs": [j.snapshot() for j in self.jobs.values()],
            "rtc_attempts": list(self.rtc_attempts),
        }

    @staticmethod
    def _room_snapshot(room: FakeRoom) -> dict[str, Any]:
        p = room.proto
        return {
            "name": p.name, "sid": p.sid, "metadata": p.metadata,
            "created_at": p.creation_time, "num_participants": p.num_participants,
            "dispatch_ids": list(room.dispatch_ids),
        }  # fmt: skip

    @staticmethod
    def _dispatch_snapshot(dispatch: FakeDispatch) -> dict[str, Any]:
        p = dispatch.proto
        return {
            "id": p.id, "agent_name": p.agent_name, "room": p.room, "metadata": p.metadata,
            "created_at": p.state.created_at / 1e9, "outcome": dispatch.outcome,
            "job_ids": list(dispatch.job_ids),
        }  # fmt: skip

    async def close(self) -> None:
        """Close worker connections (going away) and stop background tasks."""
        for session in list(self.sessions):
            await session.ws.close(code=1001, message=b"server shutting down")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ plain HTTP

    async def handle_root(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def handle_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def handle_rtc(self, request: web.Request) -> web.Response:
        """Room media is not implemented: record who tried, answer 501."""
        attempt: dict[str, Any] = {"ts": time.time(), "path": request.path, "token_valid": False}
        try:
            auth = self.authenticate(request)
        except AuthError as exc:
            attempt["error"] = str(exc)
            auth = None
        if auth:
            video = auth.claims.video
            attempt.update(
                token_valid=True,
                identity=auth.claims.identity,
                room=video.room if video else "",
                kind=auth.claims.kind,
            )
        self.rtc_attempts.append(attempt)
        self.changed()
        log.warning(
            "room media (/rtc) is not implemented by the fake: 501 (identity=%s room=%s)",
            attempt.get("identity", "?"),
            attempt.get("room", "?"),
        )
        text = "fake LiveKit server: room media (/rtc) is not implemented"
        return web.Response(status=501, text=text)

    # ------------------------------------------------------------------ Twirp

    async def handle_twirp(self, request: web.Request) -> web.Response:
        try:
            auth = self.authenticate(request)
        except AuthError as exc:
            log.info("unauthorized: %s", exc)
            return web.Response(status=401, text=str(exc))
        try:
            return await self._twirp_call(request, auth)
        except TwirpError as exc:
            log.info("twirp error %s: %s", exc.code, exc.msg)
            return exc.response()

    async def _twirp_call(self, request: web.Request, auth: Auth | None) -> web.Response:
        service, method = request.match_info["service"], request.match_info["method"]
        if request.method != "POST":
            raise TwirpError("bad_route", f"unsupported method {request.method} (only POST)")
        descriptor = SERVICES.get(service)
        if descriptor is None or method not in descriptor.methods_by_name:
            raise TwirpError("bad_route", f"no handler for path {request.path!r}")
        content_type = request.content_type
        if content_type not in ("application/protobuf", "application/json"):
            raise TwirpError("bad_route", f"unexpected Content-Type: {content_type!r}")
        entry = self._handlers.get((service, method))
        if entry is None:
            raise TwirpError("unimplemented", f"{service}.{method} is not implemented (fake)")
        request_cls, handler = entry
        payload = _decode_request(await request.read(), content_type, request_cls)
        return _encode_response(await handler(auth, payload), content_type)

    async def create_room(self, auth: Auth | None, req: room_pb.CreateRoomRequest) -> Message:
        require_create(auth)
        _require_room_name(req.name)
        return self.ensure_room(req.name, req).proto

    async def list_rooms(self, auth: Auth | None, req: room_pb.ListRoomsRequest) -> Message:
        require_list(auth)
        names = set(req.names)
        rooms = [r.proto for r in self.rooms.values() if not names or r.proto.name in names]
        return room_pb.ListRoomsResponse(rooms=rooms)

    async def delete_room(self, auth: Auth | None, req: room_pb.DeleteRoomRequest) -> Message:
        require_create(auth)
        room = self._get_room(req.room)
        for dispatch_id in list(room.dispatch_ids):
            await self._end_dispatch(room, dispatch_id)
        del self.rooms[req.room]
        log.info("room deleted name=%s sid=%s", req.room, room.proto.sid)
        self.changed()
        return room_pb.DeleteRoomResponse()

    async def list_participants(
        self, auth: Auth | None, req: room_pb.ListParticipantsRequest
    ) -> Message:
        require_admin(auth, req.room)
        return room_pb.ListParticipantsResponse()  # nobody can join the fake's rooms

    async def get_participant(
        self, auth: Auth | None, req: room_pb.RoomParticipantIdentity
    ) -> Message:
        require_admin(auth, req.room)
        raise TwirpError("not_found", "participant does not exist")

    async def remove_participant(
        self, auth: Auth | None, req: room_pb.RoomParticipantIdentity
    ) -> Message:
        require_admin(auth, req.room)
        raise TwirpError("not_found", "participant not found")

    async def update_room_metadata(
        self, auth: Auth | None, req: room_pb.UpdateRoomMetadataRequest
    ) -> Message:
        require_admin(auth, req.room)
        room = self._get_room(req.room)
        room.proto.metadata = req.metadata
        self.changed()
        return room.proto

    async def create_dispatch(
        self, auth: Auth | None, req: dispatch_pb.CreateAgentDispatchRequest
    ) -> Message:
        require_admin(auth, req.room)
        _require_room_name(req.room)
        room = self.ensure_room(req.room)
        dispatch = self.add_dispatch(room, req.agent_name, req.metadata)
        result = dispatch_pb.AgentDispatch()
        result.CopyFrom(dispatch.proto)
        return result

    async def list_dispatch(
        self, auth: Auth | None, req: dispatch_pb.ListAgentDispatchRequest
    ) -> Message:
        require_admin(auth, req.room)
        room = self._get_room(req.room)
        found = [
            self.dispatches[i].proto
            for i in room.dispatch_ids
            if not req.dispatch_id or i == req.dispatch_id
        ]
        return dispatch_pb.ListAgentDispatchResponse(agent_dispatches=found)

    async def delete_dispatch(
        self, auth: Auth | None, req: dispatch_pb.DeleteAgentDispatchRequest
    ) -> Message:
        require_admin(auth, req.room)
        room = self._get_room(req.room)
        if req.dispatch_id not in room.dispatch_ids:
            raise TwirpError("not_found", "dispatch ID not found")
        dispatch = await self._end_dispatch(room, req.dispatch_id)
        self.changed()
        return dispatch.proto

    # ------------------------------------------------------------------ rooms & dispatches

    def _get_room(self, name: str) -> FakeRoom:
        room = self.rooms.get(name)
        if room is None:
            raise TwirpError("not_found", ROOM_NOT_FOUND)
        return room

    def ensure_room(self, name: str, req: room_pb.CreateRoomRequest | None = None) -> FakeRoom:
        """Get or create a room; a new room gets its room dispatches launched."""
        if name in self.rooms:
            return self.rooms[name]
        req = req or room_pb.CreateRoomRequest(name=name)
        now = time.time()
        proto = models_pb.Room(
            sid=new_id("RM_"),
            name=name,
            empty_timeout=req.empty_timeout or DEFAULT_EMPTY_TIMEOUT,
            departure_timeout=req.departure_timeout or DEFAULT_DEPARTURE_TIMEOUT,
            max_participants=req.max_participants,
            creation_time=int(now),
            creation_time_ms=int(now * 1000),
            metadata=req.metadata,
        )
        room = self.rooms[name] = FakeRoom(proto)
        log.info("room created name=%s sid=%s", name, proto.sid)
        # pkg/rtc/room.go: without explicit agents a room dispatches to unnamed workers
        for agent in list(req.agents) or [dispatch_pb.RoomAgentDispatch()]:
            self.add_dispatch(room, agent.agent_name, agent.metadata)
        self.changed()
        return room

    def add_dispatch(self, room: FakeRoom, agent_name: str, metadata: str) -> FakeDispatch:
        proto = dispatch_pb.AgentDispatch(
            id=new_id("AD_"),
            agent_name=agent_name,
            room=room.proto.name,
            metadata=metadata,
            state=dispatch_pb.AgentDispatchState(created_at=time.time_ns()),
        )
        dispatch = self.dispatches[proto.id] = FakeDispatch(proto)
        room.dispatch_ids.append(proto.id)
        log.info("dispatch created id=%s agent_name=%r room=%s", proto.id, agent_name, proto.room)
        self.spawn(self.launch_dispatch(dispatch))
        self.changed()
        return dispatch

    async def _end_dispatch(self, room: FakeRoom, dispatch_id: str) -> FakeDispatch:
        """Remove a dispatch from its room and terminate its live jobs."""
        dispatch = self.dispatches.pop(dispatch_id)
        room.dispatch_ids.remove(dispatch_id)
        dispatch.proto.state.deleted_at = time.time_ns()
        for job_id in dispatch.job_ids:
            await self._terminate_job(self.jobs[job_id])
        log.info("dispatch deleted id=%s", dispatch_id)
        return dispatch

    async def _terminate_job(self, job: FakeJob) -> None:
        if job.state not in ("accepted", "running"):
            return
        worker = self.workers.get(job.worker_id)
        if worker is not None:
            worker.running.discard(job.proto.id)
            msg = agent_pb.ServerMessage(termination=agent_pb.JobTermination(job_id=job.proto.id))
            with contextlib.suppress(ConnectionError):
                await worker.send(msg)
        job.state, job.terminated = "success", True  # pkg/agent: TerminateJob → JS_SUCCESS
        log.info("job terminated id=%s worker=%s", job.proto.id, job.worker_id)

    # ------------------------------------------------------------------ job assignment

    async def launch_dispatch(self, dispatch: FakeDispatch) -> None:
        """Create the dispatch's job and offer it to matching workers."""
        room = self.rooms.get(dispatch.proto.room)
        if room is None:
            return
        job = agent_pb.Job(
            id=new_id("AJ_"),
            dispatch_id=dispatch.proto.id,
            type=agent_pb.JT_ROOM,
            room=room.proto,
            agent_name=dispatch.proto.agent_name,
            metadata=dispatch.proto.metadata,
        )
        dispatch.outcome = await self.assign_job(job, dispatch)
        self.changed()

    def select_worker(
        self, agent_name: str, job_type: int, attempted: set[str]
    ) -> WorkerSession | None:
        """pkg/service/agentservice.go JobRequest: prefer the busiest worker with jobs."""
        selected: WorkerSession | None = None
        max_load = 0.0
        for worker in self.workers.values():
            if worker.id in attempted or worker.status != agent_pb.WS_AVAILABLE:
                continue
            if worker.agent_name != agent_name or worker.job_type != job_type:
                continue
            if worker.running and worker.load > max_load:
                selected, max_load = worker, worker.load
            elif selected is None:
                selected = worker
        return selected

    async def assign_job(
        self,
        job: agent_pb.Job,
        dispatch: FakeDispatch | None,
        only: WorkerSession | None = None,
    ) -> str:
        """Offer a job to one worker after another until one accepts; return the outcome."""
        attempted: set[str] = set()
        record: FakeJob | None = None
        while True:
            if only is not None:
                worker = None if only.id in attempted else only
            else:
                worker = self.select_worker(job.agent_name, job.type, attempted)
            if worker is None:
                if record is None:
                    log.info(
                        "not dispatching agent job since no worker is available "
                        "agent_name=%r room=%s",
                        job.agent_name,
                        job.room.name,
                    )
                    return "no_worker"
                log.info("no workers available for job id=%s", job.id)
                return record.state
            attempted.add(worker.id)
            if record is None:
                record = self.jobs[job.id] = FakeJob(proto=job)
                if dispatch is not None:
                    dispatch.job_ids.append(job.id)
            outcome = await self.offer_job(worker, job, record, dispatch)
            if outcome != "declined" or record.terminated:
                return "assigned" if outcome == "accepted" else outcome

    async def offer_job(
        self,
        worker: WorkerSession,
        job: agent_pb.Job,
        record: FakeJob,
        dispatch: FakeDispatch | None,
    ) -> str:
        """AvailabilityRequest → AvailabilityResponse → JobAssignment, with the real timeout."""
        now = time.time_ns()
        job.state.CopyFrom(
            agent_pb.JobState(
                status=agent_pb.JS_RUNNING, worker_id=worker.id, started_at=now, updated_at=now
            )
        )
        record.state, record.worker_id = "offered", worker.id
        record.attempts.append({"worker_id": worker.id, "outcome": "offered"})
        future = asyncio.get_running_loop().create_future()
        worker.pending[job.id] = future
        self.changed()
        log.info("job offered id=%s worker=%s room=%s", job.id, worker.id, job.room.name)
        try:
            await worker.send(
                agent_pb.ServerMessage(availability=agent_pb.AvailabilityRequest(job=job))
            )
            answer = await asyncio.wait_for(future, self.config.availability_timeout)
        except TimeoutError:
            return self._end_attempt(record, "timeout", "agent worker availability timeout")
        except (WorkerClosedError, ConnectionError):
            return self._end_attempt(record, "failed", "worker closed")
        finally:
            worker.pending.pop(job.id, None)
        if answer.terminate or not answer.available:
            record.terminated = answer.terminate
            return self._end_attempt(record, "declined", "")
        return await self._assign(worker, job, record, answer, dispatch)

    def _end_attempt(self, record: FakeJob, state: str, error: str) -> str:
        record.state, record.error = state, error
        record.attempts[-1]["outcome"] = state
        log.info("job %s id=%s worker=%s %s", state, record.proto.id, record.worker_id, error)
        self.changed()
        return state

    async def _assign(
        self,
        worker: WorkerSession,
        job: agent_pb.Job,
        record: FakeJob,
        answer: agent_pb.AvailabilityResponse,
        dispatch: FakeDispatch | None,
    ) -> str:
        identity = answer.participant_identity or f"agent-{job.id}"
        job.state.participant_identity = identity
        token = self.agent_token(worker, job.room.name, identity, answer)
        assignment = agent_pb.JobAssignment(job=job, token=token)  # url "" like the real one
        try:
            await worker.send(agent_pb.ServerMessage(assignment=assignment))
        except ConnectionError:
            return self._end_attempt(record, "failed", "worker closed")
        record.participant_identity = identity
        record.attempts[-1]["outcome"] = "accepted"
        record.state = "accepted"
        worker.running.add(job.id)
        if dispatch is not None:
            dispatch.proto.state.jobs.append(job)
        log.info("job assigned id=%s worker=%s identity=%s", job.id, worker.id, identity)
        self.changed()
        return "accepted"

    def agent_token(
        self,
        worker: WorkerSession,
        room: str,
        identity: str,
        answer: agent_pb.AvailabilityResponse,
    ) -> str:
        """protocol/agent BuildAgentToken, signed with the key the worker connected with."""
        perm = worker.permissions
        grants = VideoGrants(
            room_join=True,
            agent=True,
            room=room,
            can_subscribe=perm.can_subscribe,
            can_publish=perm.can_publish,
            can_publish_data=perm.can_publish_data,
            hidden=perm.hidden,
            can_update_own_metadata=perm.can_update_metadata,
            can_subscribe_metrics=perm.can_subscribe_metrics,
        )
        attributes = dict(answer.participant_attributes)
        attributes[AGENT_NAME_ATTRIBUTE] = worker.agent_name
        token = (
            AccessToken(worker.api_key, self.config.keys[worker.api_key])
            .with_identity(identity)
            .with_name(answer.participant_name)
            .with_kind("agent")
            .with_metadata(answer.participant_metadata)
            .with_attributes(attributes)
            .with_grants(grants)
            .with_ttl(datetime.timedelta(seconds=AGENT_TOKEN_TTL_S))
        )
        return token.to_jwt()

    # ------------------------------------------------------------------ worker WebSocket

    async def handle_agent(self, request: web.Request) -> web.StreamResponse:
        """GET /agent: authenticate (agent grant), upgrade, then serve the worker protocol."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=404, text="404 page not found")
        try:
            auth = self.authenticate(request)
        except AuthError as exc:
            log.info("worker unauthorized: %s", exc)
            return web.Response(status=401, text=str(exc))
        video = _video(auth)
        if auth is None or not (video and video.agent):
            log.info("worker unauthorized: token without the agent grant")
            return web.Response(status=401, text=PERMISSION_DENIED)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = WorkerSession(id=new_id("AW_"), ws=ws, api_key=auth.api_key)
        self.sessions.add(session)
        log.info("worker connected id=%s remote=%s", session.id, request.remote)
        try:
            await self._serve_worker(session)
        finally:
            self._drop_worker(session)
        return ws

    async def _serve_worker(self, session: WorkerSession) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REGISTER_TIMEOUT
        while True:
            timeout = None if session.registered else max(0.0, deadline - loop.time())
            try:
                msg = await session.ws.receive(timeout=timeout)
            except TimeoutError:
                log.warning("worker id=%s did not register in time, closing", session.id)
                await session.ws.close(code=1008, message=b"register timeout")
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type == WSMsgType.ERROR:
                log.warning("worker id=%s websocket error: %s", session.id, msg.data)
                return
            parsed = self._parse_worker_message(session, msg.type, msg.data)
            if parsed is not None:
                await self.handle_worker_message(session, parsed)

    @staticmethod
    def _parse_worker_message(
        session: WorkerSession, kind: WSMsgType, data: Any
    ) -> agent_pb.WorkerMessage | None:
        try:
            if kind == WSMsgType.BINARY:
                return agent_pb.WorkerMessage.FromString(data)
            if kind == WSMsgType.TEXT:
                session.use_json = True
                return json_format.Parse(data, agent_pb.WorkerMessage(), ignore_unknown_fields=True)
        except (DecodeError, json_format.ParseError) as exc:
            log.warning("worker id=%s sent an unreadable message: %s", session.id, exc)
        return None

    def _drop_worker(self, session: WorkerSession) -> None:
        self.sessions.discard(session)
        was_registered = self.workers.pop(session.id, None) is not None
        for future in session.pending.values():
            if not future.done():
                future.set_exception(WorkerClosedError())
        log.info("worker disconnected id=%s agent_name=%r", session.id, session.agent_name)
        if was_registered:
            self.changed()

    async def handle_worker_message(
        self, session: WorkerSession, msg: agent_pb.WorkerMessage
    ) -> None:
        which = msg.WhichOneof("message")
        if which == "ping":
            pong = agent_pb.WorkerPong(last_timestamp=msg.ping.timestamp, timestamp=_now_ms())
            await session.send(agent_pb.ServerMessage(pong=pong))
        elif which == "register":
            await self._on_register(session, msg.register)
        elif not session.registered:
            log.warning("worker id=%s sent %s before registering; ignored", session.id, which)
        elif which == "update_worker":
            self._on_update_worker(session, msg.update_worker)
        elif which == "availability":
            self._on_availability(session, msg.availability)
        elif which == "update_job":
            self._on_update_job(session, msg.update_job)
        elif which == "migrate_job":
            self._on_migrate_job(session, msg.migrate_job)
        elif which == "simulate_job":
            self._on_simulate_job(session, msg.simulate_job)
        else:
            log.warning("worker id=%s sent an unknown message (%s)", session.id, which)

    async def _on_register(
        self, session: WorkerSession, req: agent_pb.RegisterWorkerRequest
    ) -> None:
        if session.registered:
            log.warning("worker id=%s registered twice; ignored", session.id)
            return
        if req.type not in agent_pb.JobType.values():
            log.warning("worker id=%s: unknown job type %s, closing", session.id, req.type)
            await session.ws.close(code=1008, message=b"unknown job type")
            return
        session.agent_name, session.job_type = req.agent_name, req.type
        session.version, session.namespace = req.version, req.namespace
        if req.HasField("allowed_permissions"):
            session.permissions.CopyFrom(req.allowed_permissions)
        else:
            session.permissions = _default_permissions()
        info = models_pb.ServerInfo(
            edition=models_pb.ServerInfo.Standard,
            version=FAKE_SERVER_VERSION,
            protocol=SIGNAL_PROTOCOL,
            agent_protocol=AGENT_PROTOCOL,
            node_id=self.node_id,
            debug_info="fake LiveKit server (tests/fakes/livekit_server.py)",
        )
        response = agent_pb.RegisterWorkerResponse(worker_id=session.id, server_info=info)
        await session.send(agent_pb.ServerMessage(register=response))
        session.registered = True
        self.workers[session.id] = session
        log.info(
            "worker registered id=%s agent_name=%r type=%s version=%s",
            session.id,
            session.agent_name,
            agent_pb.JobType.Name(session.job_type),
            session.version,
        )
        self.changed()
        if self.config.redispatch_on_register:
            self._redispatch_for(session)

    def _redispatch_for(self, session: WorkerSession) -> None:
        """Fake-only: relaunch dispatches that found no worker, for a matching new worker."""
        for dispatch in self.dispatches.values():
            if dispatch.outcome == "no_worker" and dispatch.proto.agent_name == session.agent_name:
                dispatch.outcome = "launching"
                log.info("redispatching id=%s to new worker %s", dispatch.proto.id, session.id)
                self.spawn(self.launch_dispatch(dispatch))

    def _on_update_worker(
        self, session: WorkerSession, update: agent_pb.UpdateWorkerStatus
    ) -> None:
        before = (session.status, round(session.load, 2), session.job_count)
        if update.HasField("status"):
            session.status = update.status
        session.load, session.job_count = update.load, update.job_count
        if before != (session.status, round(session.load, 2), session.job_count):
            log.info(
                "worker status id=%s status=%s load=%.2f jobs=%d",
                session.id,
                agent_pb.WorkerStatus.Name(session.status),
                session.load,
                session.job_count,
            )
            self.changed()

    def _on_availability(
        self, session: WorkerSession, answer: agent_pb.AvailabilityResponse
    ) -> None:
        future = session.pending.get(answer.job_id)
        if future is None or future.done():
            log.warning("availability for unknown job %s from %s", answer.job_id, session.id)
            return
        future.set_result(answer)

    def _on_update_job(self, session: WorkerSession, update: agent_pb.UpdateJobStatus) -> None:
        job = self.jobs.get(update.job_id)
        if job is None or job.worker_id != session.id or update.job_id not in session.running:
            log.info("job update for unknown job %s from %s", update.job_id, session.id)
            return
        state = JOB_STATUS_NAMES.get(update.status)
        if state is None:
            return
        job.state, job.error = state, update.error
        if state in ("success", "failed"):
            session.running.discard(update.job_id)
        log.info("job %s id=%s worker=%s %s", state, update.job_id, session.id, update.error)
        self.changed()

    def _on_migrate_job(self, session: WorkerSession, req: agent_pb.MigrateJobRequest) -> None:
        """The real OSS server ignores this; the fake re-attaches known jobs to the worker."""
        for job_id in req.job_ids:
            job = self.jobs.get(job_id)
            if job is not None:
                job.worker_id = session.id
                session.running.add(job_id)
        log.info("worker id=%s reported jobs %s", session.id, list(req.job_ids))
        self.changed()

    def _on_simulate_job(self, session: WorkerSession, req: agent_pb.SimulateJobRequest) -> None:
        job_type = agent_pb.JT_PUBLISHER if req.HasField("participant") else agent_pb.JT_ROOM
        job = agent_pb.Job(
            id=new_id("AJ_"),
            type=job_type,
            room=req.room,
            participant=req.participant if req.HasField("participant") else None,
            agent_name=session.agent_name,
        )
        self.spawn(self.assign_job(job, None, only=session))


def _default_permissions() -> models_pb.ParticipantPermission:
    return models_pb.ParticipantPermission(
        can_subscribe=True, can_publish=True, can_publish_data=True, can_update_metadata=True
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


# ----------------------------------------------------------------------------- entry point


def _parse_keys(values: Sequence[str] | None) -> dict[str, str]:
    if not values:
        key = os.environ.get("LIVEKIT_API_KEY") or DEFAULT_KEY
        return {key: os.environ.get("LIVEKIT_API_SECRET") or DEFAULT_SECRET}
    keys: dict[str, str] = {}
    for value in values:
        key, sep, secret = value.partition(":")
        if not sep or not key.strip() or not secret.strip():
            raise argparse.ArgumentTypeError(f"--keys expects KEY:SECRET, got {value!r}")
        keys[key.strip()] = secret.strip()
    return keys


def _default_port() -> int:
    url = os.environ.get("LIVEKIT_URL", "")
    try:
        return urlparse(url).port or DEFAULT_PORT
    except ValueError:
        return DEFAULT_PORT


def parse_args(argv: Sequence[str] | None = None) -> FakeConfig:
    """Command line → FakeConfig."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.livekit_server",
        description="Fake LiveKit server: Twirp room/dispatch API and the agent worker "
        "protocol, no media.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: $LIVEKIT_URL's or 7880")
    parser.add_argument(
        "--keys",
        action="append",
        metavar="KEY:SECRET",
        help="API key pair (repeatable); default $LIVEKIT_API_KEY/$LIVEKIT_API_SECRET or "
        "devkey:secret",
    )
    parser.add_argument("--state-file", type=Path, help="write the state JSON on every change")
    parser.add_argument(
        "--availability-timeout",
        type=float,
        default=AVAILABILITY_TIMEOUT,
        help="seconds a worker has to answer an AvailabilityRequest (real: 10)",
    )
    parser.add_argument(
        "--redispatch-on-register",
        action="store_true",
        help="fake-only: give dispatches that found no worker to a matching worker that "
        "registers later (the real server drops them)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    # `--dev` keys are short on purpose; PyJWT warns about every token signed with them
    warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
    try:
        keys = _parse_keys(args.keys)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d fake-livekit %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    return FakeConfig(
        host=args.host,
        port=args.port if args.port is not None else _default_port(),
        keys=keys,
        state_file=args.state_file,
        availability_timeout=args.availability_timeout,
        redispatch_on_register=args.redispatch_on_register,
    )


async def serve(config: FakeConfig) -> None:
    """Serve until SIGTERM or SIGINT, then close worker connections and stop."""
    server = FakeLiveKitServer(config)
    runner = web.AppRunner(server.app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        server.changed()
        log.info(
            "listening on http://%s:%d (keys: %s)",
            config.host,
            config.port,
            ", ".join(config.keys),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
        await server.close()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    return 0


# ------------------------------------------------------------------------- test helpers

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class FakeLiveKit:
    """A running fake server subprocess (see :func:`start_fake_livekit`)."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    api_key: str
    api_secret: str
    log_path: Path

    @property
    def url(self) -> str:
        """The ws:// URL, as LIVEKIT_URL would hold it."""
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET for a client or worker."""
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
        }

    def state(self) -> dict[str, Any]:
        """GET /_fake/state."""
        with urllib.request.urlopen(f"{self.http_url}/_fake/state", timeout=5) as resp:
            return dict(json.loads(resp.read()))

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], Any],
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> Any:
        """Poll the state until ``predicate(state)`` is truthy; return that value."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            value = predicate(state)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met in {timeout}s; state: {state}")
            time.sleep(interval)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def __enter__(self) -> FakeLiveKit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_ready(handle: FakeLiveKit, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(handle.http_url + "/", timeout=1) as resp:
                if resp.read() == b"OK":
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.02)
    return False


def start_fake_livekit(
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    api_key: str = DEFAULT_KEY,
    api_secret: str = DEFAULT_SECRET,
    state_file: Path | None = None,
    redispatch_on_register: bool = False,
    availability_timeout: float | None = None,
    log_path: Path | None = None,
    as_module: bool = False,
    ready_timeout: float = 10.0,
    extra_args: Sequence[str] = (),
) -> FakeLiveKit:
    """Start the fake server as a subprocess and wait until ``GET /`` answers ``OK``.

    ``port=None`` picks a free port (retrying if it is taken meanwhile). Its stderr goes to
    ``log_path`` (a temporary file by default; see ``.logs()``). ``as_module`` runs it as
    ``python -m tests.fakes.livekit_server`` from the repository root instead of by path.
    """
    for _ in range(3 if port is None else 1):
        chosen = port if port is not None else free_port(host)
        args = ["--host", host, "--port", str(chosen), "--keys", f"{api_key}:{api_secret}"]
        if state_file is not None:
            args += ["--state-file", str(state_file)]
        if redispatch_on_register:
            args.append("--redispatch-on-register")
        if availability_timeout is not None:
            args += ["--availability-timeout", str(availability_timeout)]
        target = ["-m", "tests.fakes.livekit_server"] if as_module else [str(Path(__file__))]
        path = log_path or Path(tempfile.mkstemp(prefix="fake-livekit-", suffix=".log")[1])
        with path.open("ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, *target, *args, *extra_args],
                cwd=REPO_ROOT,
                stdout=log_file,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
            )
        handle = FakeLiveKit(proc, host, chosen, api_key, api_secret, path)
        if _wait_ready(handle, ready_timeout):
            return handle
        handle.stop()
        if "cannot listen" not in handle.logs():
            break
    raise RuntimeError(f"fake LiveKit server did not start:\n{handle.logs()}")


if __name__ == "__main__":
    sys.exit(main())
