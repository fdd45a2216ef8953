"""`voicectl logs` for people and pipes: service lines, turn and circuit tables and lines.

rich is imported only when a table is printed: `logs --ttft --json` keeps pace with grep.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.console import Console

_COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93")


class ServiceLine(Protocol):
    """A line of a service log (logs.command.LogLine)."""

    service: str
    text: str

    def to_json(self) -> dict[str, object]: ...


class LogLineWriter:
    """Writes service lines: `name | line` with a colour per service, or JSON."""

    def __init__(self, out: TextIO, names: Sequence[str], prefix: bool, colour: bool,
                 json_lines: bool) -> None:
        self.out, self.prefix, self.json_lines = out, prefix, json_lines
        width = max((len(n) for n in names), default=0)
        self.labels = {
            n: (f"\x1b[{_COLOURS[i % len(_COLOURS)]}m{n:<{width}} |\x1b[0m " if colour
                else f"{n:<{width}} | ")
            for i, n in enumerate(names)
        }

    def line(self, ln: ServiceLine) -> None:
        if self.json_lines:
            self.out.write(json.dumps(ln.to_json(), ensure_ascii=False) + "\n")
        else:
            self.out.write((self.labels.get(ln.service, "") if self.prefix else "") + ln.text
                           + "\n")


@dataclass
class LogOutput:
    """Where `logs` writes: `out` for data, `console` for tables (made when first used: JSON
    output never imports rich), `err` for notes."""

    out: TextIO
    err: TextIO
    given_console: Console | None = None

    @functools.cached_property
    def console(self) -> Console:
        if self.given_console is not None:
            return self.given_console
        from rich.console import Console

        return Console(file=self.out, highlight=False)

    def line_writer(self, names: Sequence[str], prefix: bool, json_out: bool,
                    json_lines: bool) -> LogLineWriter:
        """A writer for service lines; coloured when the console has colours (never for JSON)."""
        colour = not json_out and self.console.color_system is not None
        return LogLineWriter(self.out, names, prefix=prefix, colour=colour,
                             json_lines=json_lines)

    def note(self, message: str) -> None:
        self.err.write(message + "\n")
        self.err.flush()

    def doc(self, doc: object) -> None:
        self.out.write(json.dumps(doc, indent=2, default=str, ensure_ascii=False) + "\n")

    def json_line(self, doc: object) -> None:
        self.out.write(json.dumps(doc, default=str, ensure_ascii=False) + "\n")
        self.out.flush()

    def flush(self) -> None:
        self.out.flush()

    def turn(self, row: dict, json_out: bool) -> None:
        """One turn as it is followed: a JSON object or a line."""
        self.json_line(row) if json_out else self.out.write(turn_line(row) + "\n")

    def transition(self, row: dict, json_out: bool) -> None:
        """One circuit transition as it is followed: a JSON object or a line."""
        self.json_line(row) if json_out else self.out.write(circuit_line(row) + "\n")

    def ttft_tables(self, rows: list[dict], stats: dict, total: int) -> None:
        ttft_tables(rows, stats, total, self.console)

    def circuit_tables(self, rows: list[dict]) -> None:
        circuit_tables(rows, self.console)


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _fmt_ms(value: object) -> str:
    return "-" if value is None else f"{value:.1f}"


def turn_line(row: dict) -> str:
    fallback = "fallback" if row.get("fallback") else ""
    return (f"{_fmt_time(row['ts'])}  {row['mode']:<7} {str(row.get('path') or '-'):<9} "
            f"ttft {_fmt_ms(row['ttft_ms']):>8} ms  total {_fmt_ms(row.get('total_ms')):>8} ms"
            f"  {fallback}").rstrip()


def ttft_tables(rows: list[dict], stats: dict, total: int, console: Console) -> None:
    """The last turns of the window, then count and percentiles per mode over all of it."""
    from rich.table import Table

    if not total:
        console.print("no turns in the event log for this window")
        return
    turns = Table(title=f"Turns (last {len(rows)} of {total})", title_justify="left")
    for name, justify in (("time", "left"), ("mode", "left"), ("path", "left"),
                          ("TTFT ms", "right"), ("total ms", "right"), ("fallback", "left")):
        turns.add_column(name, justify=justify)
    for r in rows:
        turns.add_row(_fmt_time(r["ts"]), r["mode"], str(r.get("path") or "-"),
                      _fmt_ms(r["ttft_ms"]), _fmt_ms(r.get("total_ms")),
                      "yes" if r.get("fallback") else "")
    if rows:
        console.print(turns)
    table = Table(title="TTFT per mode (ms, every turn in the window)", title_justify="left")
    for name in ("mode", "count", "p50", "p95", "p99", "max", "no TTFT"):
        table.add_column(name, justify="left" if name == "mode" else "right")
    for mode, s in stats.items():
        table.add_row(mode, str(s["count"]), *(_fmt_ms(s[k]) for k in ("p50", "p95", "p99", "max")),
                      str(s["no_ttft"]))
    console.print(table)


def _open_text(row: dict) -> str:
    if "open_s" not in row:
        return ""
    return f"{row['open_s']:.1f}s" + (" so far" if row.get("still_open") else "")


def circuit_line(row: dict) -> str:
    text = (f"{_fmt_time(row['ts'])}  {row['dependency']}: {row['from']} → {row['to']}"
            f" (failures {row['failures']})")
    opened = _open_text(row)
    if "after_open_s" in row:
        text += f"  (after {row['after_open_s']:.1f}s open)"
    return f"{text}  open {opened}" if opened else text


def circuit_tables(rows: list[dict], console: Console) -> None:
    """One table of transitions per dependency, coloured by the state entered."""
    from rich.table import Table

    if not rows:
        console.print("no circuit transitions in the event log")
        return
    for dep in dict.fromkeys(r["dependency"] for r in rows):
        table = Table(title=f"circuit: {dep}", title_justify="left")
        for name in ("time", "transition", "failures", "open for"):
            table.add_column(name, justify="right" if name == "failures" else "left")
        for r in (r for r in rows if r["dependency"] == dep):
            style = {"open": "red", "half_open": "yellow", "closed": "green"}.get(r["to"], "")
            table.add_row(_fmt_time(r["ts"]), f"[{style}]{r['from']} → {r['to']}[/]"
                          if style else f"{r['from']} → {r['to']}", str(r["failures"]),
                          _open_text(r))
        console.print(table)
