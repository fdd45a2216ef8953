"""The layout of a project's state directory (`VOICECTL_HOME`, default `.voicectl/`), in one place.

Both sides read it: voicectl writes logs, pid records, the stack lock and the managed Letta there;
the agent writes its event log, memory outbox, memory snapshot and metrics there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

OUTBOX_NAME = "memory_outbox.sqlite3"
MEMORY_SNAPSHOT_NAME = "memory_blocks.json"


@dataclass(frozen=True)
class StatePaths:
    """Where each piece of state lives below the state directory `root`."""

    root: Path

    @property
    def logs(self) -> Path:
        """One `<service>.log` per service: its keeper's lines and the service's output."""
        return self.root / "logs"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    @property
    def run(self) -> Path:
        """One pid record `<service>.json` per supervised service."""
        return self.root / "run"

    def record(self, service: str) -> Path:
        return self.run / f"{service}.json"

    @property
    def stack_lock(self) -> Path:
        """Held by `up` and `down` so that two of them never interleave."""
        return self.root / "stack.lock"

    @property
    def events(self) -> Path:
        """The agent's event log, one JSON object per line."""
        return self.root / "events.jsonl"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def ttft_cache(self) -> Path:
        """`logs --ttft`'s index of the event log, rebuilt when the log changes."""
        return self.cache / "ttft.bin"

    @property
    def outbox(self) -> Path:
        """Turns waiting to be written to Letta (sqlite), kept across restarts."""
        return self.root / OUTBOX_NAME

    @property
    def memory_snapshot(self) -> Path:
        """The last core memory read from Letta, for a cold start while Letta is down."""
        return self.root / MEMORY_SNAPSHOT_NAME

    @property
    def metrics(self) -> Path:
        """prometheus_client's multiprocess files of the agent's processes."""
        return self.root / "metrics"

    @property
    def bin(self) -> Path:
        """Installed binaries (`voicectl install livekit`)."""
        return self.root / "bin"

    @property
    def letta(self) -> Path:
        """The managed Letta server: its venv, Postgres data, home and working directory."""
        return self.root / "letta"

    @property
    def models(self) -> Path:
        """Local-mode model files assembled from their packages."""
        return self.root / "models"
