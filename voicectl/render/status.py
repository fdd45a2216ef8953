"""`voicectl status` for people: one table of the services, then a line per LiveKit detail."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from voicectl.livekit.choice import label
from voicectl.supervise.states import ServiceState
from voicectl.supervise.status import ServiceStatus

_STATE_STYLE = {
    ServiceState.RUNNING: "green",
    ServiceState.STARTING: "cyan",
    ServiceState.UNHEALTHY: "yellow",
    ServiceState.CRASHED: "red",
    ServiceState.STOPPED: "dim",
}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _megabytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 1048576:.0f} MiB"


def status_table(rows: list[ServiceStatus], console: Console | None = None) -> None:
    """State, pid, ports, uptime, restarts, memory and health of each service."""
    table = Table(box=None, header_style="bold")
    for col in ("SERVICE", "STATE", "PID", "PORTS", "UPTIME", "RESTARTS", "MEMORY", "HEALTH"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r.name,
            f"[{_STATE_STYLE.get(r.state, '')}]{r.state}[/]",
            str(r.pid or "-"),
            ",".join(map(str, r.ports)) or "-",
            _duration(r.uptime_s),
            str(r.restarts),
            _megabytes(r.memory_bytes),
            r.health,
        )
    console = console or Console()
    console.print(table)
    for r in rows:
        if r.server:
            console.print(f"{r.name}: {label(r.server, r.server_path or '')}", highlight=False)
        if r.worker_load is not None:
            full = " (full: LiveKit offers it no job)" if r.worker_load >= (r.load_limit or 0.7) \
                else ""
            console.print(f"{r.name}: worker {r.worker_agent_name!r} load {r.worker_load:.2f}, "
                          f"limit {r.load_limit:.2f}{full}, {r.active_jobs} active job(s)",
                          highlight=False)
