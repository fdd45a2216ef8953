"""Human-readable tables for status and config."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from agent.config import Settings, config_fields, mask
from voicectl.livekit.choice import label
from voicectl.supervise.status import ServiceStatus

_STATE_STYLE = {
    "running": "green",
    "starting": "cyan",
    "unhealthy": "yellow",
    "crashed": "red",
    "stopped": "dim",
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


def config_rows(s: Settings) -> list[dict]:
    """Each setting: name, value (secrets masked), source, whether secret."""
    rows = []
    for f in config_fields():
        value = getattr(s, f.name)
        shown = value
        if f.metadata["secret"]:
            shown = mask(str(value))
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        rows.append(
            {
                "name": f.metadata["env"],
                "value": shown,
                "source": s.sources.get(f.name, "default"),
                "secret": f.metadata["secret"],
                "help": f.metadata["help"],
                "note": f.metadata.get("note", ""),
            }
        )
    return rows


def config_table(rows: list[dict], s: Settings, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(box=None, header_style="bold")
    for col in ("NAME", "VALUE", "SOURCE"):
        table.add_column(col, overflow="fold")
    for r in rows:
        style = "" if r["source"] == "default" else "bold"
        table.add_row(r["name"], str(r["value"]), r["source"], style=style)
    console.print(table)
    for r in rows:
        if r["note"]:
            console.print(f"{r['name']}: {r['help']}. {r['note']}", highlight=False)
    console.print(f"env file: {s.env_file}  state: {s.home}", style="dim")


def agents_table(agents: list[dict], agent_id: str, agent_name: str,
                 console: Console | None = None) -> None:
    """Letta agents; the one the voice agent uses is marked."""
    table = Table(box=None, header_style="bold")
    for col in ("", "NAME", "ID", "MODEL", "CREATED"):
        table.add_column(col, overflow="fold")
    for a in agents:
        used = a.get("id") == agent_id or (not agent_id and a.get("name") == agent_name)
        table.add_row("*" if used else "", a.get("name", ""), a.get("id", ""),
                      str(a.get("model", "")), str(a.get("created_at", ""))[:19])
    (console or Console()).print(table)


_MARK = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red")}


def doctor_table(checks: list, console: Console | None = None) -> None:
    """One row per check with its fix."""
    table = Table(box=None, header_style="bold")
    for col in ("", "CHECK", "DETAIL", "FIX"):
        table.add_column(col, overflow="fold")
    for c in checks:
        mark, style = _MARK[c.status]
        table.add_row(f"[{style}]{mark}[/]", c.name, c.detail, c.fix)
    console = console or Console()
    console.print(table)
    counts = {k: sum(c.status == k for c in checks) for k in _MARK}
    console.print(f"{counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed")
