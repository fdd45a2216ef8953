"""The state of each service: from its pid record, its processes and its readiness probe."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import psutil

from agent.config import Settings
from voicectl.livekit.choice import running_kind
from voicectl.services.spec import ServiceSpec
from voicectl.supervise.keepers import live_child, live_keeper
from voicectl.supervise.records import ServiceRecord, read_record
from voicectl.supervise.states import KeeperState, ServiceState


@dataclass
class ServiceStatus:
    """What `voicectl status` reports for one service."""

    name: str
    state: ServiceState
    pid: int | None = None
    ports: list[int] = field(default_factory=list)
    uptime_s: float | None = None
    restarts: int = 0
    health: str = ""
    memory_bytes: int | None = None
    url: str = ""
    external: bool = False
    server: str | None = None  # livekit: binary | embedded | command | external
    server_path: str | None = None  # livekit: the binary's path (server == "binary")
    # agent: what its worker reports (GET :AGENT_HTTP_PORT/worker) and the load at which it
    # gets no job (min of livekit-server's 0.7 and AGENT_LOAD_THRESHOLD)
    worker_agent_name: str | None = None
    worker_load: float | None = None
    load_limit: float | None = None
    active_jobs: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _memory(proc: psutil.Process) -> int | None:
    total = 0
    try:
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue
    except psutil.Error:
        return None
    return total


def service_status(spec: ServiceSpec, record: ServiceRecord | None) -> ServiceStatus:
    """Combine record, live processes and probe into a state: the one place that derives it."""
    st = ServiceStatus(name=spec.name, state=ServiceState.STOPPED, ports=list(spec.ports),
                       url=spec.url)
    if spec.server is not None:
        st.server, st.server_path = spec.server.kind, spec.server.path or None
    if spec.external:
        st.external = True
        result = spec.probe(None, 0.0)
        st.state = ServiceState.RUNNING if result.ok else ServiceState.UNHEALTHY
        st.health = f"external: {result.detail}"
        return st
    if record is None:
        st.health = "not started"
        return st
    st.restarts = record.restarts
    if record.state == KeeperState.CRASHED:
        st.state, st.health = ServiceState.CRASHED, record.reason
        return st
    child = live_child(record)
    keeper = live_keeper(record)
    if child is None:
        if keeper is not None and record.state in (
                KeeperState.BACKOFF, KeeperState.STARTING, KeeperState.RUNNING):
            st.state, st.health = ServiceState.STARTING, record.reason or "starting"
        elif keeper is not None:
            st.state, st.health = ServiceState.STOPPED, "stopping"
        else:
            st.state = ServiceState.CRASHED
            st.health = f"pid {record.pid} is gone and nothing supervises it (stale record)"
        return st
    st.pid = child.pid
    if spec.server is not None:
        kind, path = running_kind(spec.server, record.cmd)
        st.server, st.server_path = kind, path or None
    st.uptime_s = round(time.time() - record.started_at, 1)
    st.memory_bytes = _memory(child)
    result = spec.probe(child.pid, record.started_at)
    st.health = result.detail if keeper else f"{result.detail} (supervisor gone)"
    if result.ok:
        st.state = ServiceState.RUNNING
    elif st.uptime_s < spec.start_timeout:
        st.state = ServiceState.STARTING
    else:
        st.state = ServiceState.UNHEALTHY
    return st


def _with_worker(settings: Settings, st: ServiceStatus) -> ServiceStatus:
    """The agent's load, its limit and active jobs, from the worker's health server."""
    if st.name != "agent" or st.pid is None:
        return st
    from voicectl.livekit.dispatch_why import worker_view

    view = worker_view(settings)
    st.load_limit = view.load_limit
    if view.reachable:
        st.worker_agent_name, st.worker_load = view.agent_name, view.load
        st.active_jobs = view.active_jobs
    return st


def all_status(settings: Settings, services: dict[str, ServiceSpec]) -> list[ServiceStatus]:
    """Status of every service, probed in parallel."""
    home = settings.home

    def one(name: str, spec: ServiceSpec) -> ServiceStatus:
        return _with_worker(settings, service_status(spec, read_record(home, name)))

    with ThreadPoolExecutor(max_workers=max(1, len(services))) as pool:
        futures = [pool.submit(one, name, spec) for name, spec in services.items()]
        return [f.result() for f in futures]
