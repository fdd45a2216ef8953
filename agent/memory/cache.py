"""A cache of the Letta agent's core memory blocks, refreshed in the background.

The hybrid path reads `prompt_section()` on every turn: a dictionary lookup, never a network
call. The last good snapshot is also kept on disk so a restarted agent still knows what Letta
knew while Letta is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.resilience import CircuitBreaker, cancel_task, classify

log = logging.getLogger("agent.memory_cache")

FetchFn = Callable[[float], Awaitable[list[tuple[str, str]]]]


class CoreMemoryCache:
    """Core memory blocks with a background refresh loop."""

    def __init__(
        self,
        fetch: FetchFn,
        *,
        breaker: CircuitBreaker | None = None,
        refresh_seconds: float = 30.0,
        timeout: float = 10.0,
        snapshot_path: Path | None = None,
    ) -> None:
        self._fetch = fetch
        self.breaker = breaker
        self.refresh_seconds = refresh_seconds
        self.timeout = timeout
        self.snapshot_path = snapshot_path
        self.blocks: list[tuple[str, str]] = []
        self.fetched_at: float | None = None
        self._section = ""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._load_snapshot()

    def prompt_section(self) -> str:
        """The memory blocks rendered for a system prompt ('' when nothing is known)."""
        return self._section

    def set_blocks(self, blocks: list[tuple[str, str]]) -> None:
        self.blocks = [(label, value) for label, value in blocks if value and value.strip()]
        self.fetched_at = time.time()
        self._section = render_blocks(self.blocks)

    async def refresh(self) -> bool:
        """Fetch the blocks once (respecting the breaker); True on success."""
        if self.breaker is not None and not self.breaker.allow():
            return False
        try:
            async with asyncio.timeout(self.timeout):
                blocks = await self._fetch(self.timeout)
        except asyncio.CancelledError:
            if self.breaker is not None:
                self.breaker.release()
            raise
        except Exception as exc:  # noqa: BLE001
            if self.breaker is not None:
                self.breaker.record_failure()
            log.debug("memory refresh failed: %s", classify(exc))
            return False
        if self.breaker is not None:
            self.breaker.record_success()
        self.set_blocks(blocks)
        self._save_snapshot()
        return True

    def refresh_soon(self) -> None:
        """Ask the background loop to refresh now (e.g. after Letta learned a turn)."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="core_memory_refresh")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_task(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            ok = await self.refresh()
            self._wake.clear()
            wait = self.refresh_seconds if ok else min(self.refresh_seconds, 2.0)
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _load_snapshot(self) -> None:
        if self.snapshot_path is None or not self.snapshot_path.is_file():
            return
        try:
            data = json.loads(self.snapshot_path.read_text())
            self.set_blocks([(str(b[0]), str(b[1])) for b in data.get("blocks", [])])
            self.fetched_at = float(data.get("fetched_at") or 0) or None
        except (OSError, ValueError, TypeError, IndexError):
            log.debug("ignoring unreadable memory snapshot %s", self.snapshot_path)

    def _save_snapshot(self) -> None:
        if self.snapshot_path is None:
            return
        try:
            tmp = self.snapshot_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"fetched_at": self.fetched_at, "blocks": self.blocks}))
            tmp.replace(self.snapshot_path)
        except OSError:
            log.debug("cannot write memory snapshot %s", self.snapshot_path, exc_info=True)


def render_blocks(blocks: list[tuple[str, str]]) -> str:
    """Core memory as a prompt section, one tagged block per label."""
    if not blocks:
        return ""
    parts = [f"<{label}>\n{value.strip()}\n</{label}>" for label, value in blocks]
    return (
        "Long-term memory (what you know about yourself and the user; use it, "
        "never read it out verbatim):\n" + "\n".join(parts)
    )
