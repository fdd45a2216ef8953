"""The memory outbox: finished turns waiting for Letta, in SQLite, kept across restarts.

Turns are written here (`<state dir>/memory_outbox.sqlite3`) before anything is sent, so a
crash or a Letta outage loses none; `agent.memory.sync.MemorySync` delivers them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

#: Delivered turns kept (newest first) for diagnostics; older ones are deleted.
KEEP_DELIVERED = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    otid TEXT NOT NULL UNIQUE,
    user_text TEXT NOT NULL,
    assistant_text TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    maybe_sent INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered REAL
);
CREATE INDEX IF NOT EXISTS turns_pending ON turns (delivered, id);
"""


@dataclass(frozen=True)
class OutboxTurn:
    """One queued (user, assistant) pair."""

    id: int
    otid: str
    user_text: str
    assistant_text: str
    created: float
    attempts: int
    maybe_sent: bool


class Outbox:
    """The SQLite outbox. Thread-safe; every method is one short transaction (tens of µs),
    cheap enough to run on the event loop."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Commits are durable across process crashes; no fsync per turn. Checkpoints (the
        # slow part, up to tens of ms) run in a thread via checkpoint(), never inline.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database (call off the event loop).

        Uses its own connection: a PASSIVE checkpoint runs alongside writers, so enqueues on
        the event loop are not held up meanwhile.
        """
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def enqueue(
        self, user_text: str, assistant_text: str, *, otid: str | None = None,
        maybe_sent: bool = False,
    ) -> str:
        """Queue a turn (idempotent per otid); returns its otid."""
        otid = otid or f"turn-{uuid.uuid4()}"
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO turns (otid, user_text, assistant_text, created, maybe_sent)"
                " VALUES (?, ?, ?, ?, ?)",
                (otid, user_text, assistant_text, time.time(), int(maybe_sent)),
            )
        return otid

    def pending_count(self) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM turns WHERE delivered IS NULL"
            ).fetchone()[0]

    def oldest_pending(self) -> OutboxTurn | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, otid, user_text, assistant_text, created, attempts, maybe_sent"
                " FROM turns WHERE delivered IS NULL ORDER BY id LIMIT 1"
            ).fetchone()
        return OutboxTurn(*row[:6], bool(row[6])) if row else None

    def mark_attempt(self, turn_id: int) -> None:
        """Record, before sending, that an attempt starts (so a crash leaves `attempts` > 0)."""
        with self._lock:
            self._db.execute("UPDATE turns SET attempts = attempts + 1 WHERE id = ?", (turn_id,))

    def mark_failed(self, turn_id: int, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE turns SET last_error = ? WHERE id = ?", (error[:300], turn_id))

    def mark_delivered(self, turn_id: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE turns SET delivered = ?, last_error = NULL WHERE id = ?",
                (time.time(), turn_id),
            )
            self._db.execute(
                "DELETE FROM turns WHERE delivered IS NOT NULL AND id <= ("
                " SELECT id FROM turns WHERE delivered IS NOT NULL"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (KEEP_DELIVERED,),
            )

    def all_turns(self) -> list[dict[str, object]]:
        """Every row (delivered ones too), oldest first: for tests and diagnostics."""
        with self._lock:
            cur = self._db.execute(
                "SELECT id, otid, user_text, assistant_text, attempts, delivered, last_error"
                " FROM turns ORDER BY id"
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


__all__ = ["KEEP_DELIVERED", "Outbox", "OutboxTurn"]
