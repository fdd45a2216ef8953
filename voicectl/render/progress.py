"""How `up` and `down` report: progress as a live table on a terminal (plain lines otherwise),
then where each part answers."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from agent.config import Settings

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

    def log_tail(self, service: str, lines: list[str]) -> None:
        """The last lines of a service's log, after it failed to start."""
        self.note(f"last lines of {service}'s log:")
        for line in lines:
            self.console.print(f"  {line}", markup=False, highlight=False)


def print_urls(printer: Printer, s: Settings, specs: dict) -> None:
    """Where each started part answers, after `up`."""
    printer.note("")
    printer.note(f"LiveKit   {s.livekit_url}")
    printer.note(f"Letta     {s.letta_server_url}" + ("" if s.letta_managed else " (external)"))
    printer.note(f"Agent     {s.agent_name}  (health http://127.0.0.1:{s.agent_http_port}/)")
    if "web" in specs:
        printer.note(f"Console   http://{s.web_host}:{s.web_port}/")
    if s.local_mode:
        printer.note(f"LLM       {s.llm_base_url}  ({s.llm_model}, local)")
    printer.note(f"Logs      voicectl logs -f    State  {s.home}")


def local_mode_written(env_file: Path) -> None:
    """`up --local` recorded LOCAL_MODE in .env."""
    sys.stderr.write(f"local mode: LOCAL_MODE=true written to {env_file}\n")
