"""A minimal real livekit-agents worker for tests against the LiveKit dev server.

Run it as LiveKit users do, with LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET pointing at
the dev server (``python -m voicectl.livekit_dev``; tests start it with
``tests.support.livekit.start_dev_livekit``)::

    python -m livekit.agents start tests/fakes/worker_app.py

Environment:
    FAKE_AGENT_NAME       agent name for explicit dispatch (default ``fake-test-agent``)
    FAKE_AGENT_HTTP_PORT  port of the worker's health server (``/`` and ``/worker``); default 0
    FAKE_AGENT_CONNECT    ``1`` (default): the entrypoint calls ``ctx.connect()`` and joins the
                          room; ``0``: it only logs
"""

from __future__ import annotations

import logging
import math
import os

from livekit.agents import AgentServer, JobContext

logger = logging.getLogger("fake-worker-app")

server = AgentServer(
    # `start` mode defaults to 0.7 CPU load, above which the worker reports itself full and
    # declines jobs; tests on a busy machine must never see that
    load_threshold=math.inf,
    num_idle_processes=1,
    host="127.0.0.1",
    port=int(os.environ.get("FAKE_AGENT_HTTP_PORT", "0")),
)


@server.rtc_session(agent_name=os.environ.get("FAKE_AGENT_NAME", "fake-test-agent"))
async def entrypoint(ctx: JobContext) -> None:
    """Log the job; join the room when asked."""
    logger.info("job started: room=%s job=%s", ctx.job.room.name, ctx.job.id)
    if os.environ.get("FAKE_AGENT_CONNECT", "1") != "1":
        return
    try:
        await ctx.connect()
    except Exception as exc:
        logger.warning("ctx.connect() failed: %s", exc)
        raise
    logger.info("joined room %s as %s", ctx.room.name, ctx.room.local_participant.identity)
