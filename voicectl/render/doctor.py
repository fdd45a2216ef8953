"""`voicectl doctor` for people: one row per check with its fix, then the counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from voicectl.doctor import Check

_MARK = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red")}


def doctor_table(checks: list[Check], console: Console | None = None) -> None:
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
