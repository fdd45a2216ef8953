"""`voicectl letta` and `voicectl install letta` for people: the agents table, what was made."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


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


def agent_created(agent: dict) -> None:
    """The new agent and the line that makes the voice agent use it."""
    sys.stdout.write(f"created Letta agent {agent['name']} ({agent['id']})\n"
                     f"use it: LETTA_AGENT_ID={agent['id']} in .env\n")


class InstallProgress:
    """The steps of installing the managed Letta server, on stderr."""

    def __init__(self) -> None:
        self.console = Console(stderr=True, highlight=False)

    def step(self, message: str) -> None:
        self.console.print(f"… {message}")

    def done(self, venv: Path) -> None:
        self.console.print(f"✓ letta installed in {venv}", style="green")
