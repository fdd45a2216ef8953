"""The worker WebSocket ``/agent``: registration, status and job answers of agent workers.

Protobuf (binary frames) or protojson (text frames) ``WorkerMessage`` / ``ServerMessage``. As
the real server: the token needs the ``agent`` grant; a worker must register within 10 s; a
message before register, a second register or an unreadable frame closes the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSMsgType, web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.protocol import agent as agent_pb
from livekit.protocol import models as models_pb

from voicectl.livekit_dev.auth import PERMISSION_DENIED, AuthError, authenticate
from voicectl.livekit_dev.config import (
    AGENT_PROTOCOL,
    REGISTER_TIMEOUT,
    SERVER_VERSION,
    SIGNAL_PROTOCOL,
)
from voicectl.livekit_dev.dispatch import Dispatcher, WorkerClosedError
from voicectl.livekit_dev.ids import new_id, now_ms

if TYPE_CHECKING:
    from voicectl.livekit_dev.config import DevConfig

log = logging.getLogger("livekit-dev.workers")


class WorkerHost(Protocol):
    """What the worker endpoint asks of the server (server.DevServer): a protocol, so that
    the server may import this module without this one importing it back."""

    config: DevConfig
    node_id: str
    dispatcher: Dispatcher
    workers: dict[str, WorkerSession]

    def spawn(self, coro: Awaitable[Any]) -> None: ...

    def changed(self) -> None: ...

HEARTBEAT_S = 10.0
JOB_STATUS_NAMES = {
    agent_pb.JS_RUNNING: "running",
    agent_pb.JS_SUCCESS: "success",
    agent_pb.JS_FAILED: "failed",
}


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


def _default_permissions() -> models_pb.ParticipantPermission:
    return models_pb.ParticipantPermission(
        can_subscribe=True, can_publish=True, can_publish_data=True, can_update_metadata=True
    )


class WorkerHub:
    """Serves ``/agent`` connections; registered workers live in ``server.workers``."""

    def __init__(self, server: WorkerHost) -> None:
        self.server = server
        self.sessions: set[WorkerSession] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /agent: authenticate (agent grant), upgrade, then serve the worker protocol."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=404, text="404 page not found")
        try:
            auth = authenticate(self.server.config.keys, request)
        except AuthError as exc:
            log.info("worker unauthorized: %s", exc)
            return web.Response(status=401, text=str(exc))
        if auth is None or not (auth.video and auth.video.agent):
            log.info("worker unauthorized: token without the agent grant")
            return web.Response(status=401, text=PERMISSION_DENIED)
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S)  # the real server pings every 10 s
        await ws.prepare(request)
        session = WorkerSession(id=new_id("AW_"), ws=ws, api_key=auth.api_key)
        self.sessions.add(session)
        log.info("worker connected id=%s remote=%s", session.id, request.remote)
        try:
            await self._serve(session)
        finally:
            self._drop(session)
        return ws

    async def close(self) -> None:
        for session in list(self.sessions):
            await session.ws.close(code=1001, message=b"server shutting down")

    async def _serve(self, session: WorkerSession) -> None:
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
            parsed = self._parse(session, msg.type, msg.data)
            if parsed is None:
                await session.ws.close(code=1003, message=b"unreadable message")
                return
            if not await self._on_message(session, parsed):
                return

    @staticmethod
    def _parse(session: WorkerSession, kind: WSMsgType, data: Any) -> agent_pb.WorkerMessage | None:
        try:
            if kind == WSMsgType.BINARY:
                return agent_pb.WorkerMessage.FromString(data)
            if kind == WSMsgType.TEXT:
                session.use_json = True
                return json_format.Parse(data, agent_pb.WorkerMessage(), ignore_unknown_fields=True)
        except (DecodeError, json_format.ParseError) as exc:
            log.warning("worker id=%s sent an unreadable message, closing: %s", session.id, exc)
        return None

    def _drop(self, session: WorkerSession) -> None:
        self.sessions.discard(session)
        was_registered = self.server.workers.pop(session.id, None) is not None
        for future in session.pending.values():
            if not future.done():
                future.set_exception(WorkerClosedError())
        log.info("worker disconnected id=%s agent_name=%r", session.id, session.agent_name)
        if was_registered:
            self.server.changed()

    async def _on_message(self, session: WorkerSession, msg: agent_pb.WorkerMessage) -> bool:
        """Handle one message; False closes the connection."""
        which = msg.WhichOneof("message")
        if which == "register":
            return await self._on_register(session, msg.register)
        if not session.registered:
            log.warning("worker id=%s sent %s before registering, closing", session.id, which)
            await session.ws.close(code=1008, message=b"not registered")
            return False
        if which == "ping":
            pong = agent_pb.WorkerPong(last_timestamp=msg.ping.timestamp, timestamp=now_ms())
            await session.send(agent_pb.ServerMessage(pong=pong))
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
        return True

    async def _on_register(
        self, session: WorkerSession, req: agent_pb.RegisterWorkerRequest
    ) -> bool:
        if session.registered:
            log.warning("worker id=%s registered twice, closing", session.id)
            await session.ws.close(code=1008, message=b"already registered")
            return False
        if req.type not in agent_pb.JobType.values():
            log.warning("worker id=%s: unknown job type %s, closing", session.id, req.type)
            await session.ws.close(code=1008, message=b"unknown job type")
            return False
        session.agent_name, session.job_type = req.agent_name, req.type
        session.version, session.namespace = req.version, req.namespace
        if req.HasField("allowed_permissions"):
            session.permissions.CopyFrom(req.allowed_permissions)
        else:
            session.permissions = _default_permissions()
        info = models_pb.ServerInfo(
            edition=models_pb.ServerInfo.Standard,
            version=SERVER_VERSION,
            protocol=SIGNAL_PROTOCOL,
            agent_protocol=AGENT_PROTOCOL,
            node_id=self.server.node_id,
            debug_info="voicectl LiveKit dev server",
        )
        response = agent_pb.RegisterWorkerResponse(worker_id=session.id, server_info=info)
        await session.send(agent_pb.ServerMessage(register=response))
        session.registered = True
        self.server.workers[session.id] = session
        log.info("worker registered id=%s agent_name=%r type=%s version=%s", session.id,
                 session.agent_name, agent_pb.JobType.Name(session.job_type), session.version)
        self.server.changed()
        if self.server.config.redispatch_on_register:
            self.server.dispatcher.redispatch_for(session)
        return True

    def _on_update_worker(
        self, session: WorkerSession, update: agent_pb.UpdateWorkerStatus
    ) -> None:
        before = (session.status, round(session.load, 2), session.job_count)
        if update.HasField("status"):
            session.status = update.status
        session.load, session.job_count = update.load, update.job_count
        if before != (session.status, round(session.load, 2), session.job_count):
            log.info("worker status id=%s status=%s load=%.2f jobs=%d", session.id,
                     agent_pb.WorkerStatus.Name(session.status), session.load, session.job_count)
            self.server.changed()

    def _on_availability(
        self, session: WorkerSession, answer: agent_pb.AvailabilityResponse
    ) -> None:
        future = session.pending.get(answer.job_id)
        if future is None or future.done():
            log.warning("availability for unknown job %s from %s", answer.job_id, session.id)
            return
        future.set_result(answer)

    def _on_update_job(self, session: WorkerSession, update: agent_pb.UpdateJobStatus) -> None:
        job = self.server.dispatcher.jobs.get(update.job_id)
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
        self.server.changed()

    def _on_migrate_job(self, session: WorkerSession, req: agent_pb.MigrateJobRequest) -> None:
        """A reconnected worker names the jobs it still runs; they are attached to it again."""
        for job_id in req.job_ids:
            job = self.server.dispatcher.jobs.get(job_id)
            if job is not None:
                job.worker_id = session.id
                session.running.add(job_id)
        log.info("worker id=%s reported jobs %s", session.id, list(req.job_ids))
        self.server.changed()

    def _on_simulate_job(self, session: WorkerSession, req: agent_pb.SimulateJobRequest) -> None:
        job_type = agent_pb.JT_PUBLISHER if req.HasField("participant") else agent_pb.JT_ROOM
        job = agent_pb.Job(
            id=new_id("AJ_"),
            type=job_type,
            room=req.room,
            participant=req.participant if req.HasField("participant") else None,
            agent_name=session.agent_name,
        )
        self.server.spawn(self.server.dispatcher.assign(job, None, only=session))
