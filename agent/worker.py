"""The LiveKit Agents worker: an AgentServer with our explicit agent name."""

from __future__ import annotations

import os

from livekit.agents import AgentServer, JobContext, JobRequest

from agent.config import load_settings
from agent.events import EventWriter

settings = load_settings()

server = AgentServer(
    load_threshold=settings.agent_load_threshold,
    host="127.0.0.1",
    port=settings.agent_http_port,
    ws_url=settings.livekit_url,
    api_key=settings.livekit_api_key,
    api_secret=settings.livekit_api_secret,
)


def _on_registered(worker_id: str, _server_info: object) -> None:
    """Record the registration in the event log: voicectl's readiness fact for the agent."""
    writer = EventWriter(settings.events_path)
    try:
        writer.emit(
            "worker",
            state="registered",
            worker_id=worker_id,
            agent_name=settings.agent_name,
            pid=os.getpid(),
        )
    finally:
        writer.close()


server.on("worker_registered", _on_registered)


async def on_request(req: JobRequest) -> None:
    """Accept jobs dispatched to our agent name."""
    await req.accept()


@server.rtc_session(agent_name=settings.agent_name, on_request=on_request)
async def entrypoint(ctx: JobContext) -> None:
    """Join the room (the full voice pipeline comes with the agent issue)."""
    await ctx.connect()
