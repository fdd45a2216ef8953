"""Agent dispatches and their jobs: which worker is offered a job, and what became of it.

livekit-server's rules, which voicectl must live with: among the available workers registered
under the dispatch's agent name one is chosen at random, weighted by (1 − load); a worker at
or above the target load (0.7) is never offered a job, whatever its own threshold; a worker
has ``availability_timeout`` (about 2.8 s) to answer, and one that does not, or disconnects
meanwhile, is skipped for the next; a dispatch that finds no worker is dropped, not retried
when a worker registers later. A new room without explicit agents gets one dispatch with an
empty agent name, served only by workers registered without a name.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import struct
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from livekit.api.access_token import AccessToken, VideoGrants
from livekit.protocol import agent as agent_pb
from livekit.protocol import agent_dispatch as dispatch_pb
from livekit.protocol import models as models_pb

from voicectl.livekit_dev.config import AGENT_TOKEN_TTL_S
from voicectl.livekit_dev.ids import new_id

if TYPE_CHECKING:
    from voicectl.livekit_dev.config import DevConfig
    from voicectl.livekit_dev.rooms import Room, RoomRegistry

log = logging.getLogger("livekit-dev.dispatch")



def as_float32(value: float) -> float:
    """``value`` as the float32 a worker's reported load is (UpdateWorkerStatus.load is a
    protobuf float): compared so, a worker reporting 0.7 is at a 0.7 target, not below it."""
    return float(struct.unpack("f", struct.pack("f", value))[0])

AGENT_NAME_ATTRIBUTE = "lk.agent_name"


class WorkerClosedError(Exception):
    """The worker's WebSocket closed while the server waited on it."""


class WorkerLink(Protocol):
    """A registered worker as dispatch sees it (workers.WorkerLink): a protocol, so that
    the worker endpoint may import this module without this one importing it back."""

    id: str
    api_key: str
    agent_name: str
    job_type: int
    status: int
    load: float
    permissions: models_pb.ParticipantPermission
    running: set[str]
    pending: dict[str, asyncio.Future[agent_pb.AvailabilityResponse]]

    async def send(self, msg: agent_pb.ServerMessage) -> None: ...


class DispatchHost(Protocol):
    """What dispatch asks of the server (server.DevServer)."""

    config: DevConfig
    rooms: RoomRegistry

    @property
    def workers(self) -> Mapping[str, WorkerLink]: ...

    def spawn(self, coro: Awaitable[Any]) -> None: ...

    def changed(self) -> None: ...


@dataclass
class Dispatch:
    """An agent dispatch; ``proto.state.jobs`` holds jobs as they were at assignment."""

    proto: dispatch_pb.AgentDispatch
    outcome: str = "launching"  # launching | no_worker | assigned | declined | timeout | failed
    job_ids: list[str] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        p = self.proto
        return {
            "id": p.id, "agent_name": p.agent_name, "room": p.room, "metadata": p.metadata,
            "created_at": p.state.created_at / 1e9, "outcome": self.outcome,
            "job_ids": list(self.job_ids),
        }  # fmt: skip


@dataclass
class Job:
    """A job offered to workers, and what became of it."""

    proto: agent_pb.Job
    state: str = "offered"  # offered accepted declined running success failed timeout
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


class Dispatcher:
    """Dispatches and jobs of the whole server; workers come from ``server.workers``."""

    def __init__(self, server: DispatchHost, rng: random.Random | None = None) -> None:
        self.server = server
        self.dispatches: dict[str, Dispatch] = {}
        self.jobs: dict[str, Job] = {}
        self.rng = rng or random.Random()

    @property
    def target_load_f32(self) -> float:
        return as_float32(self.server.config.target_load)

    # ------------------------------------------------------------------ dispatches

    def add_dispatch(self, room: Room, agent_name: str, metadata: str) -> Dispatch:
        proto = dispatch_pb.AgentDispatch(
            id=new_id("AD_"),
            agent_name=agent_name,
            room=room.name,
            metadata=metadata,
            state=dispatch_pb.AgentDispatchState(created_at=time.time_ns()),
        )
        dispatch = self.dispatches[proto.id] = Dispatch(proto)
        room.dispatch_ids.append(proto.id)
        log.info("dispatch created id=%s agent_name=%r room=%s", proto.id, agent_name, room.name)
        self.server.spawn(self.launch(dispatch))
        self.server.changed()
        return dispatch

    async def end_dispatch(self, room: Room, dispatch_id: str) -> Dispatch:
        """Remove a dispatch from its room and terminate its live jobs."""
        dispatch = self.dispatches.pop(dispatch_id)
        room.dispatch_ids.remove(dispatch_id)
        dispatch.proto.state.deleted_at = time.time_ns()
        for job_id in dispatch.job_ids:
            await self._terminate(self.jobs[job_id])
        log.info("dispatch deleted id=%s", dispatch_id)
        return dispatch

    async def _terminate(self, job: Job) -> None:
        if job.state not in ("accepted", "running"):
            return
        worker = self.server.workers.get(job.worker_id)
        if worker is not None:
            worker.running.discard(job.proto.id)
            msg = agent_pb.ServerMessage(termination=agent_pb.JobTermination(job_id=job.proto.id))
            with contextlib.suppress(ConnectionError):
                await worker.send(msg)
        job.state, job.terminated = "success", True  # pkg/agent: TerminateJob → JS_SUCCESS
        log.info("job terminated id=%s worker=%s", job.proto.id, job.worker_id)

    def redispatch_for(self, worker: WorkerLink) -> None:
        """Dev-only option: relaunch dispatches that found no worker, for a new matching one."""
        for dispatch in self.dispatches.values():
            if dispatch.outcome == "no_worker" and dispatch.proto.agent_name == worker.agent_name:
                dispatch.outcome = "launching"
                log.info("redispatching id=%s to new worker %s", dispatch.proto.id, worker.id)
                self.server.spawn(self.launch(dispatch))

    # ------------------------------------------------------------------ jobs

    async def launch(self, dispatch: Dispatch) -> None:
        """Create the dispatch's job and offer it to matching workers."""
        room = self.server.rooms.get(dispatch.proto.room)
        if room is None:
            return
        job = agent_pb.Job(
            id=new_id("AJ_"),
            dispatch_id=dispatch.proto.id,
            type=agent_pb.JT_ROOM,
            room=room.current(),
            agent_name=dispatch.proto.agent_name,
            metadata=dispatch.proto.metadata,
        )
        dispatch.outcome = await self.assign(job, dispatch)
        self.server.changed()

    def candidates(
        self, agent_name: str, job_type: int, attempted: set[str]
    ) -> list[WorkerLink]:
        """Workers that may be offered this job now: same name and type, available, below 0.7."""
        return [
            w for w in self.server.workers.values()
            if w.id not in attempted and w.status == agent_pb.WS_AVAILABLE
            and w.agent_name == agent_name and w.job_type == job_type
            and w.load < self.target_load_f32
        ]  # fmt: skip

    def select_worker(
        self, agent_name: str, job_type: int, attempted: set[str]
    ) -> WorkerLink | None:
        """One candidate at random, weighted by (1 − load), as the server's selector does."""
        found = self.candidates(agent_name, job_type, attempted)
        if not found:
            return None
        weights = [max(1.0 - w.load, 1e-6) for w in found]
        return self.rng.choices(found, weights=weights, k=1)[0]

    def _why_none(self, agent_name: str, job_type: int) -> str:
        named = [w for w in self.server.workers.values()
                 if w.agent_name == agent_name and w.job_type == job_type]
        if not named:
            return "no worker registered with that agent name"
        limit = self.server.config.target_load
        if all(w.load >= self.target_load_f32 or w.status != agent_pb.WS_AVAILABLE
               for w in named):
            loads = ", ".join(f"{w.id} load {w.load:.2f}" for w in named)
            return f"no servers available: every worker is full or at load >= {limit} "\
                   f"({loads})"
        return "every available worker was tried"

    async def assign(
        self, job: agent_pb.Job, dispatch: Dispatch | None, only: WorkerLink | None = None
    ) -> str:
        """Offer a job to one worker after another until one accepts; return the outcome."""
        attempted: set[str] = set()
        record: Job | None = None
        while True:
            if only is not None:
                worker = None if only.id in attempted else only
            else:
                worker = self.select_worker(job.agent_name, job.type, attempted)
            if worker is None:
                reason = self._why_none(job.agent_name, job.type)
                if record is None:
                    log.info("not dispatching agent job: %s agent_name=%r room=%s",
                             reason, job.agent_name, job.room.name)
                    return "no_worker"
                log.info("no more workers for job id=%s (%s)", job.id, reason)
                return record.state
            attempted.add(worker.id)
            if record is None:
                record = self.jobs[job.id] = Job(proto=job)
                if dispatch is not None:
                    dispatch.job_ids.append(job.id)
            outcome = await self.offer(worker, job, record, dispatch)
            if outcome == "accepted":
                return "assigned"
            if record.terminated:
                return outcome
            # declined, timed out or the worker went away: the next worker gets its chance

    async def offer(
        self, worker: WorkerLink, job: agent_pb.Job, record: Job, dispatch: Dispatch | None
    ) -> str:
        """AvailabilityRequest → AvailabilityResponse → JobAssignment, within the deadline."""
        now = time.time_ns()
        job.state.CopyFrom(agent_pb.JobState(
            status=agent_pb.JS_RUNNING, worker_id=worker.id, started_at=now, updated_at=now))
        record.state, record.worker_id = "offered", worker.id
        record.attempts.append({"worker_id": worker.id, "outcome": "offered"})
        future: asyncio.Future[agent_pb.AvailabilityResponse] = (
            asyncio.get_running_loop().create_future())
        worker.pending[job.id] = future
        self.server.changed()
        log.info("job offered id=%s worker=%s room=%s", job.id, worker.id, job.room.name)
        try:
            await worker.send(
                agent_pb.ServerMessage(availability=agent_pb.AvailabilityRequest(job=job)))
            answer = await asyncio.wait_for(future, self.server.config.availability_timeout)
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

    def _end_attempt(self, record: Job, state: str, error: str) -> str:
        record.state, record.error = state, error
        record.attempts[-1]["outcome"] = state
        log.info("job %s id=%s worker=%s %s", state, record.proto.id, record.worker_id, error)
        self.server.changed()
        return state

    async def _assign(
        self,
        worker: WorkerLink,
        job: agent_pb.Job,
        record: Job,
        answer: agent_pb.AvailabilityResponse,
        dispatch: Dispatch | None,
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
        self.server.changed()
        return "accepted"

    def agent_token(
        self, worker: WorkerLink, room: str, identity: str,
        answer: agent_pb.AvailabilityResponse,
    ) -> str:
        """protocol/agent BuildAgentToken, signed with the key the worker connected with."""
        perm = worker.permissions
        grants = VideoGrants(
            room_join=True, agent=True, room=room,
            can_subscribe=perm.can_subscribe, can_publish=perm.can_publish,
            can_publish_data=perm.can_publish_data, hidden=perm.hidden,
            can_update_own_metadata=perm.can_update_metadata,
            can_subscribe_metrics=perm.can_subscribe_metrics,
        )  # fmt: skip
        attributes = dict(answer.participant_attributes)
        attributes[AGENT_NAME_ATTRIBUTE] = worker.agent_name
        token = (
            AccessToken(worker.api_key, self.server.config.keys[worker.api_key])
            .with_identity(identity)
            .with_name(answer.participant_name)
            .with_kind("agent")
            .with_metadata(answer.participant_metadata)
            .with_attributes(attributes)
            .with_grants(grants)
            .with_ttl(datetime.timedelta(seconds=AGENT_TOKEN_TTL_S))
        )
        return token.to_jwt()
