"""The `agent` service: the livekit-agents worker (`python -m agent start`)."""

from __future__ import annotations

import sys

from agent.config import Settings
from agent.events import find_since
from voicectl.services.overrides import command_override
from voicectl.services.probes import ProbeResult, probe_worker
from voicectl.services.spec import ServiceSpec
from voicectl.supervise.process_tree import process_tree_pids


def agent_spec(settings: Settings) -> ServiceSpec:
    """Ready when its health server names our agent and one of its processes has logged its
    registration with LiveKit since this run started."""
    argv = command_override(settings, "agent") or [sys.executable, "-m", "agent", "start"]
    port = settings.agent_http_port

    def probe(pid: int | None, since: float) -> ProbeResult:
        health = probe_worker(port, settings.agent_name)
        if not health.ok or pid is None:
            return health
        pids = process_tree_pids(pid)
        reg = find_since(
            settings.events_path,
            since,
            lambda r: r["event"] == "worker" and r.get("pid") in pids,
        )
        if reg is None:
            return ProbeResult(False, f"worker up on :{port}, not yet registered with LiveKit")
        return ProbeResult(True, f"{health.detail}, registered as {reg['worker_id']}")

    return ServiceSpec(
        name="agent",
        argv=argv,
        url=f"http://127.0.0.1:{port}/",
        ports=[port, settings.metrics_port],
        probe=probe,
        depends_on=("livekit", "letta", *(("llm", "embeddings") if settings.local_mode else ())),
        start_timeout=90.0,
    )
