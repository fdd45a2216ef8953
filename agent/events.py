"""The agent's event log: one JSON object per line, shared by the agent (writer) and voicectl.

Each line holds `ts` (Unix seconds, float), `event` (one of EVENTS) and that event's fields.
Neither side parses free-text log lines for facts: this module is the contract.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Event name -> the fields it always carries (more may be present).
EVENTS: dict[str, tuple[str, ...]] = {
    "turn": ("mode", "path", "ttft_ms", "total_ms", "fallback"),
    "circuit": ("dependency", "from", "to", "failures"),
    "fallback": ("reason",),
    "memory_sync": ("ok", "ms", "pending"),
    "startup": ("phase", "elapsed_ms"),
    "job": ("room", "accepted", "reason"),
    "vad": ("loaded", "reason"),
    "worker": ("state", "worker_id", "agent_name", "pid"),
    "session": ("state", "reason"),
}


#: Callables shown every record any EventWriter of this process writes (metrics observe the
#: log this way). They run on the writer's thread and must be quick; their errors are dropped.
EventListener = Callable[[dict[str, object]], None]
_listeners: list[EventListener] = []


def add_listener(listener: EventListener) -> None:
    """Show every event written in this process to `listener` (once, however often added)."""
    if listener not in _listeners:
        _listeners.append(listener)


def remove_listener(listener: EventListener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def _notify(record: dict[str, object]) -> None:
    for listener in tuple(_listeners):
        try:
            listener(record)
        except Exception:  # noqa: BLE001 - an observer must never break the writer
            logging.getLogger("agent.events").debug("event listener failed", exc_info=True)


class EventError(ValueError):
    """An event that does not match the schema."""


def make_event(event: str, ts: float | None = None, **fields: object) -> dict[str, object]:
    """Build and check an event record."""
    required = EVENTS.get(event)
    if required is None:
        raise EventError(f"unknown event {event!r}")
    missing = [name for name in required if name not in fields]
    if missing:
        raise EventError(f"event {event!r} lacks {', '.join(missing)}")
    return {"ts": round(time.time() if ts is None else ts, 6), "event": event, **fields}


class EventWriter:
    """Appends events to a JSONL file; safe across threads and processes (O_APPEND, one write).

    A record always starts on a fresh line: when the file does not end in a newline (a writer
    crashed mid-record, a short write on a full disk) the record is preceded by one, so the
    torn line is skipped by readers and cannot swallow the next record.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._readable = True
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except PermissionError:  # a file we may append to but not read: no check then
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._readable = False
        self._lock = threading.Lock()

    def _torn(self) -> bool:
        """True when the file ends inside a line (two syscalls: fstat and a 1-byte pread)."""
        if not self._readable:
            return False
        size = os.fstat(self._fd).st_size
        return size > 0 and os.pread(self._fd, 1, size - 1) != b"\n"

    def emit(self, event: str, **fields: object) -> dict[str, object]:
        record = make_event(event, **fields)
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        try:
            with self._lock:
                os.write(self._fd, b"\n" + line if self._torn() else line)
        finally:  # listeners see the fact even when the disk refuses it
            _notify(record)
        return record

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


@dataclass
class ReadStats:
    """What a read skipped."""

    read: int = 0
    skipped: int = 0


def parse_lines(
    lines: Iterable[bytes | str],
    stats: ReadStats | None = None,
    events: set[str] | frozenset[str] | None = None,
) -> Iterator[dict]:
    """Yield valid event records from raw lines; corrupt, partial or foreign lines are counted."""
    stats = stats if stats is not None else ReadStats()
    for raw in lines:
        if events is not None and not _mentions(raw, events):
            continue
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            stats.skipped += 1
            continue
        if (
            not isinstance(record, dict)
            or record.get("event") not in EVENTS
            or not isinstance(record.get("ts"), int | float)
        ):
            stats.skipped += 1
            continue
        if events is not None and record["event"] not in events:
            continue
        stats.read += 1
        yield record


def _mentions(raw: bytes | str, events: Iterable[str]) -> bool:
    """Cheap pre-filter: a line of a wanted event names it as a JSON string."""
    if isinstance(raw, bytes):
        return any(f'"{e}"'.encode() in raw for e in events)
    return any(f'"{e}"' in raw for e in events)


def read_events(
    path: Path | str,
    stats: ReadStats | None = None,
    events: set[str] | frozenset[str] | None = None,
) -> Iterator[dict]:
    """Records of an event log file (none if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as fh:
        yield from parse_lines(fh, stats, events)


def find_since(
    path: Path | str,
    since_ts: float,
    match: Callable[[dict], bool],
    block: int = 1 << 16,
) -> dict | None:
    """The newest record at or after `since_ts` that `match`es, reading the file backwards.

    Records are appended in time order, so the scan stops at the first block older than
    `since_ts`: cost is proportional to what was written since then, not to the file size.
    """
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError:
        return None
    with fh:
        end = fh.seek(0, os.SEEK_END)
        carry = b""
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start) + carry
            lines = chunk.split(b"\n")
            carry = lines[0] if start > 0 else b""
            body = lines[1:] if start > 0 else lines
            oldest = None
            for record in reversed(list(parse_lines(line for line in body if line))):
                oldest = record["ts"]
                if record["ts"] >= since_ts and match(record):
                    return record
            if oldest is not None and oldest < since_ts:
                return None
            end = start
    return None
