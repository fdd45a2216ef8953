"""How `up` and `down` report progress: a live table on a terminal, plain lines otherwise."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

_STYLE = {"ready": "green", "stopped": "yellow", "failed": "red"}


class Printer:
    """Progress of services; `live` redraws one table in place, else one line per change."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.rows: dict[str, tuple[str, str]] = {}
        self.started = time.monotonic()
        self._live: Live | None = None

    def __enter__(self) -> Printer:
        if self.console.is_terminal:
            self._live = Live(self._table(), console=self.console, refresh_per_second=8,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(None, None, None)
            self._live = None

    def _table(self) -> Table:
        table = Table(show_header=False, box=None, pad_edge=False)
        for name, (kind, detail) in self.rows.items():
            mark = {"ready": "✓", "failed": "✗", "stopped": "■"}.get(kind, "…")
            style = _STYLE.get(kind, "cyan")
            table.add_row(Text(mark, style=style), Text(name, style="bold"), detail)
        return table

    def _set(self, name: str, kind: str, detail: str) -> None:
        if self.rows.get(name) == (kind, detail):
            return
        self.rows[name] = (kind, detail)
        if self._live is not None:
            self._live.update(self._table())
        else:
            mark = {"ready": "✓", "failed": "✗", "stopped": "■"}.get(kind, "…")
            self.console.print(f"{mark} {name}: {detail}", style=_STYLE.get(kind))

    def state(self, name: str, detail: str) -> None:
        self._set(name, "progress", detail)

    def ready(self, name: str, detail: str, elapsed: float) -> None:
        suffix = f" ({elapsed:.1f}s)" if elapsed else ""
        self._set(name, "ready", f"{detail}{suffix}")

    def failed(self, name: str, detail: str) -> None:
        self._set(name, "failed", detail)

    def stopped(self, name: str, detail: str, was_running: bool) -> None:
        self._set(name, "stopped" if was_running else "progress", detail)

    def note(self, message: str) -> None:
        if self._live is not None:
            self._live.console.print(message)
        else:
            self.console.print(message)
