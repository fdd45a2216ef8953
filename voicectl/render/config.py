"""`voicectl config` for people: each setting, its value and where it came from."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from agent.config import Settings


def config_table(rows: list[dict], s: Settings, console: Console | None = None) -> None:
    """The rows of effective_config.config_rows; values not at their default in bold."""
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
