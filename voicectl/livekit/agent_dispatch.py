"""Send the agent into a room and, when asked to wait, learn whether a worker took the job."""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.config import Settings
from voicectl.livekit import api as ops
from voicectl.livekit.dispatch_why import explain


@dataclass
class Dispatched:
    """The dispatch's report (the `--json` document) and, when no worker took it, why."""

    result: dict
    failure: str = ""


def dispatch_agent(s: Settings, room: str, agent_name: str, metadata: str, create_room: bool,
                   wait: float | None) -> Dispatched:
    """Dispatch; with `wait`, add whether a worker accepted and, if not, the likely cause."""
    since = time.time()
    result = ops.dispatch(s, room, agent_name, metadata, create_room)
    if wait is None:
        return Dispatched(result)
    job = ops.wait_for_job(s, room, since, wait)
    result["accepted"] = bool(job and job.get("accepted"))
    result["job_reason"] = job.get("reason", "") if job else ""
    if result["accepted"]:
        return Dispatched(result)
    why = explain(s, room, result["agent_name"], since)
    result.update(cause=why["cause"], why=why["why"], worker=why["worker"])
    failure = (f"no worker took the job for room {room!r} within {wait:g}s: "
               f"{why['why']}") if job is None else f"{why['why']} (room {room!r})"
    return Dispatched(result, failure)
