"""Why a dispatched agent did not come: what voicectl can see of the agent worker.

livekit-server tells nobody why a dispatch found no worker (it logs "not dispatching agent
job" and drops it), so the cause comes from what we see ourselves:

- the worker's health server (`GET :AGENT_HTTP_PORT/worker`: `agent_name`, `worker_load`,
  `active_jobs`) and its `worker` event (the name it registered with LiveKit);
- the `job` events (our request handler's answer to each offer, with its reason);
- the load limit: livekit-server offers no job to a worker at load >= 0.7 (its target load),
  and the worker itself declines at AGENT_LOAD_THRESHOLD; the lower of the two applies.

Causes: `declined` (the worker refused the offer: the `job` event's reason), `no_worker` (no
worker runs, none registered, or it registered under another agent name), `full` (the worker
is at or above the limit), `unknown` (none of these: nothing known); and `start_failed` when
the worker accepted but the job's start failed (its `startup` event). Standard library only.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

from agent.config import SERVER_TARGET_LOAD, Settings
from agent.events import find_since
from voicectl.services.probes import http_get

DECLINED, NO_WORKER, FULL, UNKNOWN = "declined", "no_worker", "full", "unknown"
START_FAILED = "start_failed"  # accepted, then the job's start failed
#: how far back the event log is searched for the worker's registration
REGISTRATION_LOOKBACK_S = 7 * 86400


@dataclass
class WorkerView:
    """The agent worker as its health server and the event log show it."""

    reachable: bool
    port: int
    agent_name: str | None = None  # as the worker's /worker endpoint names it
    registered_as: str | None = None  # the newest `worker` event's agent_name
    worker_id: str | None = None
    load: float | None = None
    load_limit: float = SERVER_TARGET_LOAD
    active_jobs: int | None = None
    detail: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def server_target_load() -> float:
    """livekit-server's 0.7; the embedded dev server's --target-load when voicectl started it
    with VOICECTL_DEV_TARGET_LOAD (tests on a busy machine raise it)."""
    raw = os.environ.get("VOICECTL_DEV_TARGET_LOAD", "").strip()
    try:
        return float(raw) if raw else SERVER_TARGET_LOAD
    except ValueError:
        return SERVER_TARGET_LOAD


def load_limit(settings: Settings) -> float:
    """The load at which the worker gets no job: the server's limit or the worker's own."""
    return min(settings.agent_load_threshold, server_target_load())


def worker_view(settings: Settings, timeout: float = 1.0) -> WorkerView:
    """Ask the worker's health server (loopback, AGENT_HTTP_PORT) and read its registration."""
    port = settings.agent_http_port
    view = WorkerView(reachable=False, port=port, load_limit=load_limit(settings))
    reg = find_since(settings.events_path, time.time() - REGISTRATION_LOOKBACK_S,
                     lambda r: r["event"] == "worker" and r.get("state") == "registered")
    if reg is not None:
        view.registered_as, view.worker_id = reg.get("agent_name"), reg.get("worker_id")
    try:
        status, body = http_get(f"http://127.0.0.1:{port}/worker", timeout)
        doc = json.loads(body)
    except (OSError, ValueError) as exc:
        view.detail = f"nothing answers on 127.0.0.1:{port}/worker ({exc or type(exc).__name__})"
        return view
    if status != 200 or not isinstance(doc, dict):
        view.detail = f"127.0.0.1:{port}/worker answered {status}"
        return view
    view.reachable = True
    view.agent_name = str(doc.get("agent_name", ""))
    view.load = round(float(doc.get("worker_load", 0.0) or 0.0), 3)
    view.active_jobs = int(doc.get("active_jobs", 0) or 0)
    return view


def job_event(settings: Settings, room: str, since: float) -> dict | None:
    """The worker's newest answer to an offer for this room since `since`."""
    return find_since(settings.events_path, since,
                      lambda r: r["event"] == "job" and r.get("room") == room)


def explain(settings: Settings, room: str, agent_name: str, since: float,
            view: WorkerView | None = None) -> dict:
    """Why no agent of `agent_name` came to `room` after a dispatch at `since`.

    Returns `{cause, why, worker}`: `why` is one line for a person.
    """
    view = view or worker_view(settings)
    out = {"cause": UNKNOWN, "why": "", "worker": view.to_json()}
    job = job_event(settings, room, since)
    if job is not None and not job.get("accepted"):
        out.update(cause=DECLINED,
                   why=f"the worker declined the job: {job.get('reason') or 'no reason given'}")
        return out
    if job is not None:
        failed = find_since(settings.events_path, since,
                            lambda r: r["event"] == "startup" and r.get("room") == room
                            and r.get("phase") == "failed")
        if failed is not None:
            out.update(cause=START_FAILED, why=f"the worker accepted the job but its start failed "
                       f"({failed.get('stage', '?')}): {failed.get('error', '')}"[:400])
        else:
            out["why"] = "the worker accepted the job; the agent has not joined yet"
        return out
    registered = view.agent_name or view.registered_as
    if not view.reachable and not view.registered_as:
        out.update(cause=NO_WORKER, why=f"no agent worker is registered: {view.detail} and "
                   "the event log has no registration (start it: voicectl up agent)")
        return out
    if not view.reachable:
        out.update(cause=NO_WORKER, why=f"no agent worker is running: {view.detail} (it last "
                   f"registered as {view.registered_as!r}; start it: voicectl up agent)")
        return out
    if registered != agent_name:
        out.update(cause=NO_WORKER, why=f"no worker is registered under agent name "
                   f"{agent_name!r}: the agent worker on :{view.port} registered as "
                   f"{registered!r} (dispatch --agent-name {registered}, or set AGENT_NAME)")
        return out
    if view.registered_as is None:
        out.update(cause=NO_WORKER, why=f"the agent worker on :{view.port} has not registered "
                   "with LiveKit (see voicectl logs agent)")
        return out
    if view.load is not None and view.load >= view.load_limit:
        out.update(cause=FULL, why=f"the worker is at full load: load {view.load:.2f}, limit "
                   f"{view.load_limit:.2f} (LiveKit offers no job to a worker at load >= "
                   f"{server_target_load():g}; AGENT_LOAD_THRESHOLD is "
                   f"{settings.agent_load_threshold:g}); {view.active_jobs} active job(s)")
        return out
    out["why"] = (f"nothing known: worker {registered!r} is registered, load {view.load:.2f} "
                  f"below the limit {view.load_limit:.2f}, {view.active_jobs} active job(s), "
                  "and it recorded no answer for this room (see voicectl logs livekit agent)")
    return out
