"""`voicectl logs`: service logs (tail, follow, filter, several at once) and the event log's views.

Service logs are free text: a line's time is the one it starts with (`[voicectl ISO]`, an ISO
time) or, for JSON lines, their `timestamp`; a line without one takes its older neighbour's.
`--ttft` and `--circuit` read the agent's event log (`events.jsonl`), never the free text.
"""

from __future__ import annotations

import heapq
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from voicectl.errors import UsageError
from voicectl.render.logs import LogLineWriter, LogOutput

if TYPE_CHECKING:
    from rich.console import Console

    from agent.config import Settings

DEFAULT_LINES = 50
DEFAULT_ROWS = 20
MAX_UNTIMED = 2000  # lines read past the last wanted one looking for a time to inherit
POLL_SECONDS = 0.25


# -- input


def parse_count(value: int | str | None, default: int | None) -> int | None:
    """-n: a count, or None for all."""
    if value is None:
        return default
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return None
        if not text.isdigit():
            raise UsageError(f"-n {value!r}: expected a number or 'all'")
        value = int(text)
    if value < 0:
        raise UsageError(f"-n {value}: must not be negative")
    return value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CLOCK = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?")


def parse_when(text: str, option: str = "--since", now: float | None = None) -> float:
    """Unix seconds of `10m` (ago), `1h30m`, an ISO date/time (naive = local), or `HH:MM` today."""
    now = time.time() if now is None else now
    value = text.strip()
    if value and _DURATION.sub("", value) == "":
        return now - sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(value))
    if _CLOCK.fullmatch(value):
        value = f"{datetime.fromtimestamp(now).date().isoformat()}T{value.zfill(5)}"
    parsed = _iso(value)
    if parsed is None:
        raise UsageError(f"{option} {text!r}: expected a duration (30s, 10m, 2h, 1d) "
                         "or an ISO time (2026-11-21T13:05)")
    return parsed


def _iso(value: str) -> float | None:
    value = value.replace(",", ".")
    if value.endswith(" UTC"):
        value = value[:-4] + "+00:00"
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def compile_grep(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"--grep {pattern!r}: not a valid regular expression ({exc})") from None


# -- times of free-text lines

_LINE_TIME = re.compile(
    r"^\[?(?:voicectl )?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?)"
    r"(\s?(?:Z|UTC|[+-]\d{2}:?\d{2}))?"
)
_JSON_TIME = re.compile(r'"(?:timestamp|time|ts)"\s*:\s*"([^"]{10,40})"')


def line_time(line: str) -> float | None:
    """The time a log line carries, if it is one we recognise."""
    m = _LINE_TIME.match(line)
    if m:
        stamp = m.group(1)[:26] if "." in m.group(1) or "," in m.group(1) else m.group(1)
        zone = (m.group(2) or "").strip()
        zone = {"Z": "+00:00", "UTC": "+00:00"}.get(zone, zone)
        if zone and ":" not in zone:
            zone = f"{zone[:3]}:{zone[3:]}"
        return _iso(stamp + zone)
    if line.startswith("{"):
        m = _JSON_TIME.search(line)
        if m:
            return _iso(m.group(1))
    return None


# -- service logs


@dataclass
class LogLine:
    service: str
    ts: float | None
    text: str

    def to_json(self) -> dict[str, object]:
        return {"service": self.service, "ts": self.ts, "line": self.text}


def _lines_backwards(path: Path, end: int, block: int = 1 << 16) -> Iterator[str]:
    with path.open("rb") as fh:
        carry = b""
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            parts = (fh.read(end - start) + carry).split(b"\n")
            carry = parts.pop(0) if start > 0 else b""
            for raw in reversed(parts):
                yield raw.decode("utf-8", "replace").rstrip("\r")
            end = start
        if carry:
            yield carry.decode("utf-8", "replace").rstrip("\r")


@dataclass
class Query:
    """What to show of each service log."""

    limit: int | None
    since: float | None
    until: float | None
    grep: re.Pattern[str] | None

    def matches(self, text: str) -> bool:
        return self.grep is None or self.grep.search(text) is not None


def read_service(path: Path, service: str, query: Query, end: int) -> list[LogLine]:
    """The lines of path[:end] the query selects (oldest first), reading backwards from end."""
    region = _region(path, query, end)
    _assign_times(region, path)
    lines = [ln for ln in region if _in_window(ln, query) and query.matches(ln.text)]
    if query.limit is not None:
        lines = lines[-query.limit:] if query.limit else []
    for ln in lines:
        ln.service = service
    return lines


def _region(path: Path, query: Query, end: int) -> list[LogLine]:
    """Enough of the file's end to answer the query, oldest first; times not inherited yet."""
    region: list[LogLine] = []
    below_until = query.until is None
    counted = extra = 0
    for text in _lines_backwards(path, end):
        if not text and not region:
            continue  # the newline ending the file
        own = line_time(text)
        region.append(LogLine("", own, text))
        if own is not None:
            if query.since is not None and own < query.since:
                break
            if query.until is not None and own < query.until:
                below_until = True
            if query.since is None and query.limit is not None and counted >= query.limit:
                break  # an older anchor for the inherited times: done
        if below_until and query.matches(text):
            counted += 1
        if query.since is None and query.limit is not None and counted >= query.limit:
            extra += 1
            if extra > MAX_UNTIMED:
                break  # no time anywhere near: the lines keep the next known one
    region.reverse()
    return region


def _assign_times(region: list[LogLine], path: Path) -> None:
    """Lines without a time take their older neighbour's (the first ones: the next known)."""
    last = None
    for ln in region:
        if ln.ts is None:
            ln.ts = last
        last = ln.ts
    first = next((ln.ts for ln in region if ln.ts is not None), None)
    if first is None:
        try:
            first = path.stat().st_mtime
        except OSError:
            first = None
    for ln in region:
        if ln.ts is not None:
            break
        ln.ts = first


def _in_window(ln: LogLine, query: Query) -> bool:
    if ln.ts is None:
        return query.since is None and query.until is None
    return ((query.since is None or ln.ts >= query.since)
            and (query.until is None or ln.ts < query.until))


def _known_services() -> tuple[str, ...]:
    from voicectl.services.catalog import SERVICE_ORDER

    return tuple(SERVICE_ORDER)


def log_dir(settings: Settings) -> Path:
    return settings.paths.logs


def select_services(settings: Settings, names: Sequence[str]) -> list[str]:
    """The services to show: the named ones (checked), else every one with a log file."""
    logs = log_dir(settings)
    known = _known_services()
    present = sorted(p.stem for p in logs.glob("*.log")) if logs.is_dir() else []
    if names:
        for name in names:
            if name not in known and name not in present:
                raise UsageError(f"unknown service {name!r} (services: {', '.join(known)})")
        return list(dict.fromkeys(names))
    return [n for n in known if n in present] + [n for n in present if n not in known]


def _merged(per_service: list[list[LogLine]]) -> list[LogLine]:
    return list(heapq.merge(*per_service, key=lambda ln: ln.ts if ln.ts is not None else 0.0))


def service_logs(settings: Settings, names: Sequence[str], query: Query, follow: bool,
                 json_out: bool, io: LogOutput, stop: threading.Event | None,
                 poll: float) -> None:
    from voicectl.logs.follow import Follower

    selected = select_services(settings, names)
    logs = log_dir(settings)
    if follow and not names:
        selected = list(dict.fromkeys([*selected, *_known_services()]))
    writer = io.line_writer(selected, prefix=len(selected) > 1 or not names, json_out=json_out,
                            json_lines=json_out and follow)
    if not selected or not any((logs / f"{n}.log").exists() for n in selected):
        io.note(f"no service logs in {logs} yet" + (": waiting" if follow else ""))
    per_service, followers = [], {}
    for name in selected:
        path = logs / f"{name}.log"
        size = path.stat().st_size if path.exists() else 0
        per_service.append(read_service(path, name, query, size) if size else [])
        if follow:
            followers[name] = Follower(path, offset=size)
    lines = _merged(per_service)
    if json_out and not follow:
        io.doc([ln.to_json() for ln in lines])
        return
    for ln in lines:
        writer.line(ln)
    io.flush()
    if follow:
        _follow_services(followers, query, writer, io, stop, poll)


def _follow_services(followers: dict, query: Query, writer: LogLineWriter, io: LogOutput,
                     stop: threading.Event | None, poll: float) -> None:
    last_ts: dict[str, float | None] = {}

    def tick() -> None:
        for name, follower in followers.items():
            for raw in follower.poll():
                text = raw.decode("utf-8", "replace").rstrip("\r")
                ts = line_time(text) or last_ts.get(name) or time.time()
                last_ts[name] = ts
                if query.matches(text):
                    writer.line(LogLine(name, ts, text))
            for note in follower.notes:
                io.note(f"voicectl: {note}")
            follower.notes.clear()
        io.flush()

    _loop(tick, stop, poll)
    for follower in followers.values():
        follower.close()


def _loop(tick: Callable[[], None], stop: threading.Event | None, poll: float) -> None:
    """Call tick every `poll` seconds until stop is set or Ctrl-C."""
    try:
        while stop is None or not stop.is_set():
            tick()
            if stop is not None:
                stop.wait(poll)
            else:
                time.sleep(poll)
        tick()
    except KeyboardInterrupt:
        pass


# -- the event log: --ttft


def _no_event_log(path: Path, json_out: bool, io: LogOutput, empty: dict[str, Any]) -> None:
    """Say that the agent has written no event log yet (in the --json document too)."""
    note = f"no event log at {path} (the agent writes it once it runs)"
    io.note(note)
    if json_out:
        io.doc({**empty, "note": note})


def ttft_view(settings: Settings, query: Query, limit: int | None, follow: bool,
              json_out: bool, io: LogOutput, stop: threading.Event | None, poll: float) -> None:
    from voicectl.logs import ttft

    path = settings.events_path
    if not path.exists() and not follow:
        _no_event_log(path, json_out, io, {"turns": [], "stats": {}, "skipped": 0, "total": 0})
        return
    report = ttft.turn_report(path, query.since, query.until, limit,
                              cache=settings.paths.ttft_cache)
    rows = ttft.turn_rows(report.rows)
    stats = report.hist.stats()
    if report.hist.skipped:
        io.note(f"skipped {report.hist.skipped} unreadable lines")
    if follow:
        for row in rows:
            io.turn(row, json_out)
        _follow_events(path, "turn", io, json_out, stop, poll, report.span[1])
        return
    if json_out:
        io.doc({"turns": rows, "stats": stats, "skipped": report.hist.skipped,
                "total": report.hist.turns, "since": query.since, "until": query.until})
        return
    io.ttft_tables(rows, stats, report.hist.turns)


# -- the event log: --circuit


def read_circuit(path: Path, since: float | None, until: float | None) -> tuple[list[dict], int]:
    """The `circuit` events of the window, oldest first, and how many lines were unreadable."""
    from agent.events import ReadStats, parse_lines
    from voicectl.logs.ttft import window

    lo, hi = window(path, since, until)
    stats = ReadStats()
    records = list(parse_lines(_mentioning(path, lo, hi, b'"circuit"'), stats, {"circuit"}))
    return records, stats.skipped


def _mentioning(path: Path, lo: int, hi: int, needle: bytes,
                block: int = 8 << 20) -> Iterator[bytes]:
    """Lines of [lo, hi) containing needle, found with bytes.find over large blocks."""
    with path.open("rb") as fh:
        fh.seek(lo)
        carry, left = b"", hi - lo
        while left > 0:
            data = fh.read(min(block, left))
            if not data:
                break
            left -= len(data)
            data = carry + data
            cut = data.rfind(b"\n") + 1 if left > 0 else len(data)
            yield from _lines_with(data, cut, needle)
            carry = data[cut:]
        if carry:
            yield from _lines_with(carry, len(carry), needle)


def _lines_with(data: bytes, end: int, needle: bytes) -> Iterator[bytes]:
    pos = data.find(needle, 0, end)
    while pos >= 0:
        start = data.rfind(b"\n", 0, pos) + 1
        stop = data.find(b"\n", pos, end)
        stop = end if stop < 0 else stop
        yield data[start:stop]
        pos = data.find(needle, stop, end)


def circuit_timeline(records: list[dict], now: float) -> list[dict]:
    """Transitions with, on each one into `open`, how long that open period lasted."""
    rows, opened = [], {}
    for r in sorted(records, key=lambda r: r["ts"]):
        dep = str(r.get("dependency", "?"))
        row = {"ts": r["ts"], "dependency": dep, "from": r.get("from"), "to": r.get("to"),
               "failures": r.get("failures")}
        if dep in opened and r.get("to") != "open":
            start_row = opened.pop(dep)
            start_row["open_s"] = round(r["ts"] - start_row["ts"], 3)
            start_row["still_open"] = False
        if r.get("to") == "open":
            if dep in opened:  # open again without leaving open: the earlier period ends here
                prev = opened.pop(dep)
                prev["open_s"], prev["still_open"] = round(r["ts"] - prev["ts"], 3), False
            opened[dep] = row
        rows.append(row)
    for row in opened.values():
        row["open_s"], row["still_open"] = round(now - row["ts"], 3), True
    return rows


def circuit_view(settings: Settings, query: Query, limit: int | None, follow: bool,
                 json_out: bool, io: LogOutput, stop: threading.Event | None, poll: float) -> None:
    path = settings.events_path
    if not path.exists() and not follow:
        _no_event_log(path, json_out, io, {"transitions": [], "skipped": 0})
        return
    records, skipped = read_circuit(path, query.since, query.until) if path.exists() else ([], 0)
    rows = circuit_timeline(records, min(time.time(), query.until or time.time()))
    if limit is not None:
        rows = rows[-limit:] if limit else []
    if skipped:
        io.note(f"skipped {skipped} unreadable lines")
    if follow:
        for row in rows:
            io.transition(row, json_out)
        size = path.stat().st_size if path.exists() else 0
        _follow_events(path, "circuit", io, json_out, stop, poll, size)
        return
    if json_out:
        io.doc({"transitions": rows, "skipped": skipped, "since": query.since,
                "until": query.until})
        return
    io.circuit_tables(rows)


def _follow_events(path: Path, event: str, io: LogOutput, json_out: bool,
                   stop: threading.Event | None, poll: float, offset: int) -> None:
    """Print new turn or circuit events as they are appended."""
    from voicectl.logs.follow import Follower
    from voicectl.logs.ttft import read_turn

    follower = Follower(path, offset=offset)
    opened: dict[str, dict] = {}

    def tick() -> None:
        for raw in follower.poll():
            row = _event_row(raw, event, read_turn, opened)
            if row is not None:
                io.turn(row, json_out) if event == "turn" else io.transition(row, json_out)
        for note in follower.notes:
            io.note(f"voicectl: {note}")
        follower.notes.clear()
        io.flush()

    _loop(tick, stop, poll)
    follower.close()


def _event_row(raw: bytes, event: str, read_turn, opened: dict[str, dict]) -> dict | None:
    if event == "turn":
        try:
            record = read_turn(raw)
        except ValueError:
            return None
        return None if record is None else {
            k: record.get(k) for k in ("ts", "mode", "path", "ttft_ms", "total_ms", "fallback")}
    from agent.events import parse_lines

    for record in parse_lines([raw], events={"circuit"}):
        row = circuit_timeline([record], record["ts"])[0]
        row.pop("open_s", None)
        row.pop("still_open", None)
        dep = row["dependency"]
        if dep in opened and row["to"] != "open":
            row["after_open_s"] = round(row["ts"] - opened.pop(dep)["ts"], 3)
        if row["to"] == "open":
            opened[dep] = row
        return row
    return None


# -- the entry point


def run_logs(
    settings: Settings,
    services: Sequence[str] = (),
    *,
    follow: bool = False,
    lines: int | str | None = None,
    since: str | None = None,
    until: str | None = None,
    grep: str | None = None,
    ttft: bool = False,
    circuit: bool = False,
    json_out: bool = False,
    console: Console | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: threading.Event | None = None,
    poll: float = POLL_SECONDS,
) -> None:
    """`voicectl logs`: everything but option parsing; bad input raises UsageError (exit 2).

    Output goes to `out` and `err` (default stdout and stderr), tables to `console`; `stop`
    ends --follow (else Ctrl-C does)."""
    if ttft and circuit:
        raise UsageError("--ttft and --circuit exclude each other")
    if (ttft or circuit) and services:
        raise UsageError(f"{'--ttft' if ttft else '--circuit'} reads the event log: "
                         "name no service")
    if (ttft or circuit) and grep is not None:
        raise UsageError("--grep filters service logs, not --ttft or --circuit")
    if follow and until is not None:
        raise UsageError("--until cannot be used with --follow")
    now = time.time()
    since_ts = parse_when(since, "--since", now) if since is not None else None
    until_ts = parse_when(until, "--until", now) if until is not None else None
    if since_ts is not None and until_ts is not None and until_ts <= since_ts:
        raise UsageError("--until must be later than --since")
    pattern = compile_grep(grep)
    windowed = since_ts is not None or until_ts is not None
    default = DEFAULT_ROWS if ttft else (None if circuit or windowed else DEFAULT_LINES)
    limit = parse_count(lines, default)
    query = Query(limit, since_ts, until_ts, pattern)
    io = LogOutput(out or sys.stdout, err or sys.stderr, console)
    try:
        if ttft:
            ttft_view(settings, query, limit, follow, json_out, io, stop, poll)
        elif circuit:
            circuit_view(settings, query, limit, follow, json_out, io, stop, poll)
        else:
            service_logs(settings, services, query, follow, json_out, io, stop, poll)
    except BrokenPipeError:  # the reader went away (`voicectl logs -f | head`): stop quietly
        if out is None:
            _silence_stdout()


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the exit flush cannot fail."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
