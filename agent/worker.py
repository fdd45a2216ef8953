"""The LiveKit Agents worker: AgentServer, prewarm, request handler and the entrypoint in phases.

- prewarm (once per job process, before any job): load Silero VAD in a helper thread; when it
  fails the agent runs without VAD (STT endpointing) and says so in a `vad` event.
- request handler (main process): accept jobs for our agent name, refuse a second agent of ours
  in a room that already has one; a `job` event either way, with how long the answer took
  (`answer_ms`: LiveKit drops an offer unanswered after ~2.8 s, we answer within 1 s).
- entrypoint: connect first, then bootstrap (runtime: Letta client, providers), start the
  session, and always close the resources; `startup` events with elapsed times.
- an idle watchdog ends a silent session politely (VOICE_IDLE_TIMEOUT_SECONDS).
- the main process also runs the memory outbox sender, so queued turns reach Letta even
  between sessions and after a restart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib
import json
import logging
import os
import time
from typing import Any

from livekit.agents import AgentServer, JobContext, JobProcess, JobRequest

# Plugins register themselves on import, which must happen on the main thread.
from livekit.plugins import deepgram, openai, silero  # noqa: F401

try:  # the optional Cartesia extra
    from livekit.plugins import cartesia  # type: ignore[attr-defined]  # noqa: F401
except ImportError:
    pass

from agent import metrics
from agent.config import Settings
from agent.config.loading import load_settings
from agent.events import EventWriter

settings = load_settings()
log = logging.getLogger("agent.worker")

# Prometheus: every process of the worker writes its figures to files the AgentServer serves
# on METRICS_PORT (set up before anything records a value); events feed the metric set.
metrics.prepare_multiprocess(settings)
metrics.install(settings)

#: Participant attribute that marks an agent of ours in a room.
AGENT_ATTRIBUTE = "voicectl.agent_name"
VAD_LOAD_TIMEOUT = 8.0
#: How long a just-accepted room counts as taken before its job shows up as running.
ACCEPT_GRACE_SECONDS = 10.0
SHUTDOWN_FLUSH_SECONDS = 2.0

_events: EventWriter | None = None


def events() -> EventWriter:
    """This process's event writer (opened lazily: job processes are forked)."""
    global _events
    if _events is None:
        _events = EventWriter(settings.paths.events)
    return _events


def emit(event: str, **fields: object) -> None:
    try:
        events().emit(event, **fields)
    except Exception:
        log.warning("cannot write %s event", event, exc_info=True)


# --------------------------------------------------------------------------- prewarm


def prewarm(proc: JobProcess) -> None:
    """Load Silero VAD once per process, in a helper thread; run without it if that fails."""
    from agent.providers import load_vad

    started = time.perf_counter()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad-load")
    try:
        proc.userdata["vad"] = pool.submit(load_vad).result(timeout=VAD_LOAD_TIMEOUT)
        proc.userdata["vad_error"] = None
        emit("vad", loaded=True, reason="ok",
             ms=round((time.perf_counter() - started) * 1000, 2), pid=os.getpid())
    except Exception as exc:  # noqa: BLE001 - any failure: carry on without VAD
        reason = f"{type(exc).__name__}: {exc}"[:300] or "unknown"
        proc.userdata["vad"] = None
        proc.userdata["vad_error"] = reason
        log.warning("Silero VAD failed to load (%s); running without VAD", reason)
        emit("vad", loaded=False, reason=reason, pid=os.getpid())
    finally:
        pool.shutdown(wait=False)
    if settings.local_mode:  # local whisper and piper, once per job process (~1-2 s)
        from agent.local.providers import prewarm_models

        try:
            prewarm_models(settings)
        except Exception:  # noqa: BLE001 - they load (and report) again when first used
            log.warning("local models not prewarmed", exc_info=True)
    # what a job imports later would otherwise be imported on its event loop, mid-session
    for module in ("letta_client", "agent.brain.brain", "agent.voice_agent",
                   "agent.brain.runtime", "agent.idle", "aiohttp"):
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - imported (and reported) again when used
            log.warning("cannot preload %s", module, exc_info=True)
    from agent.brain.runtime import freeze_heap

    freeze_heap()  # before any job: a full GC pause must not land in a conversation


server = AgentServer(
    load_threshold=settings.agent_load_threshold,
    host="127.0.0.1",
    port=settings.agent_http_port,
    ws_url=settings.livekit_url,
    api_key=settings.livekit_api_key,
    api_secret=settings.livekit_api_secret,
    setup_fnc=prewarm,
    prometheus_port=settings.metrics_port,
    prometheus_multiproc_dir=str(metrics.metrics_dir(settings)),
)


# --------------------------------------------------------------------------- main process


_main: dict[str, Any] = {}


def _on_registered(worker_id: str, _server_info: object) -> None:
    """Record the registration in the event log: voicectl's readiness fact for the agent."""
    emit(
        "worker",
        state="registered",
        worker_id=worker_id,
        agent_name=settings.agent_name,
        pid=os.getpid(),
        hybrid=settings.use_hybrid_streaming,
    )
    try:
        metrics.start_main_process(settings)
    except Exception:
        log.warning("metrics sampler not started", exc_info=True)
    _start_outbox_sender()


def _start_outbox_sender() -> None:
    """Deliver the memory outbox from the long-lived main process (best effort)."""
    if "runtime" in _main:
        return
    try:
        from agent.brain.runtime import AgentRuntime

        runtime = AgentRuntime(settings, events=events(), source="worker")
        runtime.sync.start()
        _main["runtime"] = runtime
    except Exception:
        log.warning("memory outbox sender not started", exc_info=True)


server.on("worker_registered", _on_registered)

_recent_accepts: dict[str, float] = {}

#: LiveKit gives a worker about 2.8 s to answer a job offer, then offers the job to another
#: worker or drops it. We answer within 1 s in the worst case: the local checks are instant,
#: the one remote check is bounded by PARTICIPANT_CHECK_SECONDS.
PARTICIPANT_CHECK_SECONDS = 0.5


def _local_reason(req: JobRequest) -> str | None:
    """What this process knows without asking anyone: a job of ours already in the room."""
    room = req.room.name
    if room in _recent_accepts:
        return "agent_already_in_room"
    for info in server.active_jobs:
        if info.job.room.name == room and info.job.agent_name == req.agent_name:
            return "agent_already_in_room"
    return None


async def _remote_reason(room: str) -> tuple[str | None, str]:
    """Ask LiveKit whether an agent of ours is in the room, within PARTICIPANT_CHECK_SECONDS.

    Returns (reason to refuse or None, how the check went: ok | timeout | error). A slow or
    failed check never becomes a refusal: the local check still holds.
    """
    try:
        from livekit import api

        async with asyncio.timeout(PARTICIPANT_CHECK_SECONDS):
            async with api.LiveKitAPI(
                url=settings.livekit_http_url,
                api_key=settings.livekit_api_key,
                api_secret=settings.livekit_api_secret,
            ) as lkapi:
                resp = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
    except TimeoutError:
        log.info("participant check for room %s took over %.1fs; answering without it",
                 room, PARTICIPANT_CHECK_SECONDS)
        return None, "timeout"
    except Exception as exc:  # noqa: BLE001 - the local check still holds
        log.debug("participant check for room %s failed: %s", room, exc)
        return None, "error"
    for p in resp.participants:
        if p.kind == api.ParticipantInfo.Kind.AGENT and (
            p.attributes.get(AGENT_ATTRIBUTE) == settings.agent_name
            or p.attributes.get("lk.agent_name") == settings.agent_name
        ):
            return "agent_already_in_room", "ok"
    return None, "ok"


async def on_request(req: JobRequest) -> None:
    """Accept jobs dispatched to our agent name, one agent of ours per room; answer fast."""
    started = time.perf_counter()
    room = req.room.name
    now = time.monotonic()
    for name, at in list(_recent_accepts.items()):
        if now - at > ACCEPT_GRACE_SECONDS:
            del _recent_accepts[name]
    # local knowledge first, and the room claimed before any await: a second request for it
    # may arrive meanwhile
    reason = _local_reason(req)
    check = "local"
    if reason is None:
        _recent_accepts[room] = now
        reason, check = await _remote_reason(room)
        if reason is not None:
            _recent_accepts.pop(room, None)

    # the answer leaves as accept / reject start; accept then waits for the assignment
    answer_ms = round((time.perf_counter() - started) * 1000, 2)
    if reason is not None:
        await req.reject()
        emit("job", room=room, accepted=False, reason=reason, job_id=req.id,
             answer_ms=answer_ms, check=check)
        return
    await req.accept(
        name="Letta voice agent",
        identity=f"{settings.agent_name}-{req.id}",
        attributes={AGENT_ATTRIBUTE: settings.agent_name},
    )
    emit("job", room=room, accepted=True, reason="ok", job_id=req.id, answer_ms=answer_ms,
         check=check)


# --------------------------------------------------------------------------- entrypoint


def settings_for_job(metadata: str) -> Settings:
    """The job's metadata may choose the Letta agent (the web console sends letta_agent_id)."""
    try:
        data = json.loads(metadata or "{}")
    except ValueError:
        return settings
    agent_id = data.get("letta_agent_id") if isinstance(data, dict) else None
    if isinstance(agent_id, str) and agent_id.strip():
        return dataclasses.replace(settings, letta_agent_id=agent_id.strip())
    return settings


@server.rtc_session(agent_name=settings.agent_name, on_request=on_request)
async def entrypoint(ctx: JobContext) -> None:
    """Connect, bootstrap, start the session; resources are always closed."""
    started = time.perf_counter()
    room = ctx.job.room.name

    def phase(name: str, **extra: object) -> None:
        emit("startup", phase=name, elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
             room=room, job_id=ctx.job.id, **extra)

    phase("handshake_start")
    try:
        await ctx.connect()
    except Exception as exc:
        phase("failed", stage="connect", error=f"{type(exc).__name__}: {exc}"[:300])
        raise
    phase("ctx_connected")

    runtime = None
    try:
        from livekit.agents import AgentSession

        from agent.brain.brain import Brain
        from agent.brain.runtime import AgentRuntime
        from agent.idle import IdleWatchdog
        from agent.providers import build_session_llm, build_stt, build_tts
        from agent.voice_agent import VoiceAgent

        runtime = AgentRuntime(settings_for_job(ctx.job.metadata), events=events(), room=room)
        runtime.start(freeze_gc=False)  # the prewarm step froze the heap already
        vad = ctx.proc.userdata.get("vad")
        session_kwargs: dict[str, Any] = {}
        if vad is None:
            # without VAD, turns end on the STT's endpointing
            session_kwargs["turn_handling"] = {"turn_detection": "stt"}
        elif settings.turn_detection != "auto":
            session_kwargs["turn_handling"] = {"turn_detection": settings.turn_detection}
        if delays := settings.endpointing_delays():
            session_kwargs.setdefault("turn_handling", {})["endpointing"] = delays
        session = AgentSession(
            stt=build_stt(settings),
            tts=build_tts(settings),
            llm=build_session_llm(settings),
            vad=vad,
            **session_kwargs,
        )
        metrics.attach_session_metrics(session, settings)
        brain = Brain(runtime)
        await session.start(VoiceAgent(brain), room=ctx.room)
        phase("session_started", mode=brain.mode, vad=vad is not None,
              turn_detection=session_kwargs.get("turn_handling", {}).get("turn_detection",
                                                                          "auto"))
        emit("session", state="started", reason="job", room=room, mode=brain.mode)

        ended: list[str] = []

        def end_session(reason: str) -> None:
            if ended:
                return
            ended.append(reason)
            emit("session", state="ended", reason=reason, room=room)
            ctx.shutdown(reason=reason)

        watchdog = IdleWatchdog(
            session, settings.voice_idle_timeout_seconds, lambda: end_session("idle_timeout")
        )
        watchdog.start()
        session.on("close", lambda ev: end_session(_reason(getattr(ev, "reason", None))))

        async def close_resources() -> None:
            await watchdog.stop()
            await runtime.aclose(flush_timeout=SHUTDOWN_FLUSH_SECONDS)

        ctx.add_shutdown_callback(close_resources)
        phase("init_done")
    except BaseException as exc:
        phase("failed", stage="bootstrap", error=f"{type(exc).__name__}: {exc}"[:300])
        if runtime is not None:
            await runtime.aclose()
        raise


def _reason(value: object) -> str:
    """A close reason as a plain string (enums by value)."""
    if value is None:
        return "closed"
    return str(getattr(value, "value", value))
