"""Durable memory sync: the turns of the outbox reach Letta in order, each exactly once.

Turns are written to the outbox (`agent.memory.outbox`) before anything is sent. One
sender per state directory (an advisory file lock, released by the OS if the process dies)
delivers the oldest pending turn, retrying with backoff while Letta is down. Each turn carries
an otid; a turn whose earlier attempt may have reached Letta is first looked up by that otid,
so a lost acknowledgement never causes a second copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.memory.outbox import Outbox, OutboxTurn
from agent.resilience import (
    OPEN,
    CircuitBreaker,
    DependencyError,
    backoff_delay,
    cancel_task,
    classify,
)

log = logging.getLogger("agent.memory_sync")

#: The WAL is checkpointed off the event loop every this many deliveries (and additions).
CHECKPOINT_EVERY = 50


class SenderLease:
    """An advisory lock file: one memory-sync sender per state directory at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


SendFn = Callable[[OutboxTurn, float], Awaitable[None]]
SeenFn = Callable[[OutboxTurn, float], Awaitable[bool]]
EmitFn = Callable[..., object]


class MemorySync:
    """The background sender of an Outbox."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        send: SendFn,
        already_delivered: SeenFn,
        breaker: CircuitBreaker,
        emit: EmitFn | None = None,
        timeout: float = 10.0,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        idle_poll: float = 0.5,
        lease_path: Path | None = None,
    ) -> None:
        self.outbox = outbox
        self._send = send
        self._already_delivered = already_delivered
        self.breaker = breaker
        self._emit = emit
        self.timeout = timeout
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.idle_poll = idle_poll
        self.lease = SenderLease(lease_path or outbox.path.with_suffix(".lock"))
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self._added = 0
        #: The latest delivery attempt failed (cleared by the next success).
        self.failing = False

    # -- producer side

    def add(
        self, user_text: str, assistant_text: str, *, otid: str | None = None,
        maybe_sent: bool = False,
    ) -> str:
        """Queue a turn durably (one short SQLite commit) and wake the sender."""
        otid = self.outbox.enqueue(user_text, assistant_text, otid=otid, maybe_sent=maybe_sent)
        self._wake.set()
        self._added += 1
        if self._added % CHECKPOINT_EVERY == 0:  # the log also grows while Letta is down
            asyncio.get_running_loop().run_in_executor(None, self._checkpoint_quietly)
        return otid

    def _checkpoint_quietly(self) -> None:
        try:
            self.outbox.checkpoint()
        except Exception:  # noqa: BLE001 - a later checkpoint folds it in
            log.debug("outbox checkpoint failed", exc_info=True)

    def notify(self) -> None:
        self._wake.set()

    # -- lifecycle

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="memory_sync")

    async def stop(self, flush_timeout: float = 0.0) -> None:
        """Stop the sender, first trying to deliver what is pending for `flush_timeout` s."""
        if flush_timeout > 0:
            await self.flush(flush_timeout)
        if self._task is not None:
            await cancel_task(self._task)
            self._task = None
        if self.lease.held:
            await asyncio.to_thread(self._checkpoint_quietly)
        self.lease.release()

    async def flush(self, timeout: float, *, stop_on_failure: bool = True) -> bool:
        """Wait until nothing is pending (True) or `timeout` passes (False).

        By default it gives up early when Letta is failing: then waiting cannot help.
        """
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.outbox.pending_count() == 0:
                return True
            failing = self.breaker.state == OPEN or self.failing
            if (stop_on_failure and failing) or self._task is None or self._task.done():
                break  # Letta is failing (or nobody sends): no point waiting
            self._wake.set()
            await asyncio.sleep(0.05)
        return self.outbox.pending_count() == 0

    # -- the sender

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self.lease.try_acquire():
                await asyncio.sleep(max(self.idle_poll, 0.5))  # another process sends
                continue
            turn = self.outbox.oldest_pending()
            if turn is None:
                await self._sleep(self.idle_poll)
                continue
            if not self.breaker.allow():
                await self._sleep(min(self.idle_poll, 0.25))
                continue
            try:
                ok = await self._deliver(turn)
            except asyncio.CancelledError:
                self.breaker.release()
                raise
            if ok:
                failures = 0
                continue
            delay = min(self.max_delay, backoff_delay(failures, self.base_delay))
            failures += 1
            await asyncio.sleep(delay)

    async def _deliver(self, turn: OutboxTurn) -> bool:
        started = time.perf_counter()
        seen = False
        try:
            if turn.attempts > 0 or turn.maybe_sent:
                # an earlier attempt's outcome is unknown: look before sending again
                async with asyncio.timeout(self.timeout * 2):
                    seen = await self._already_delivered(turn, self.timeout)
            if not seen:
                self.outbox.mark_attempt(turn.id)
                async with asyncio.timeout(self.timeout):
                    await self._send(turn, self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified and recorded
            err = exc if isinstance(exc, DependencyError) else classify(exc)
            self.breaker.record_failure()
            self.failing = True
            self.outbox.mark_failed(turn.id, str(err))
            self._event(False, started, turn, error=err.kind, deduplicated=False)
            return False
        self.breaker.record_success()
        self.failing = False
        self.outbox.mark_delivered(turn.id)
        self.delivered += 1
        if self.delivered % CHECKPOINT_EVERY == 0:
            await asyncio.to_thread(self._checkpoint_quietly)
        self._event(True, started, turn, deduplicated=seen)
        return True

    def _event(self, ok: bool, started: float, turn: OutboxTurn, **extra: object) -> None:
        if self._emit is None:
            return
        try:
            pending = self.outbox.pending_count()
            self._emit(
                "memory_sync",
                ok=ok,
                ms=round((time.perf_counter() - started) * 1000, 2),
                pending=pending,
                otid=turn.otid,
                attempt=turn.attempts + 1,
                **extra,
            )
        except Exception:
            log.debug("memory_sync event failed", exc_info=True)


__all__ = ["MemorySync", "SenderLease"]
