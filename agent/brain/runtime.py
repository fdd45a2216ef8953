"""The process-wide parts of the agent: breakers, clients, memory cache, outbox, health probe.

One `AgentRuntime` per process (worker job, `voicectl chat`, a test): every conversation's
`Brain` shares its circuit breakers, so what one session learns about a dependency protects
the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from agent.brain.turn import Turn
from agent.clients.letta import LettaAccess, close_letta_clients
from agent.clients.llm import LLMClient, close_llm_clients
from agent.config import Settings
from agent.events import EventWriter
from agent.memory.cache import CoreMemoryCache
from agent.memory.outbox import Outbox, OutboxTurn
from agent.memory.sync import MemorySync
from agent.providers import brain_llm, reasoning_kwargs
from agent.resilience import CLOSED, HALF_OPEN, CircuitBreaker, cancel_task, classify

log = logging.getLogger("agent.runtime")

DEPENDENCIES = ("llm", "letta", "preresponse")

#: Live runtimes per event loop: the pooled clients close with the last one.
_live: dict[int, int] = {}


def _loop_id() -> int:
    try:
        return id(asyncio.get_running_loop())
    except RuntimeError:
        return 0


class AgentRuntime:
    """Shared state and background tasks of the agent in one process."""

    def __init__(
        self,
        settings: Settings,
        *,
        events: EventWriter | None = None,
        sync_enabled: bool = True,
        source: str = "voice",
        room: str = "",
    ) -> None:
        self.settings = settings
        self.source = source
        self.room = room  # the LiveKit room of this job: turn events name it
        self.pending_at_close = 0
        self._own_events = events is None
        self.events = events if events is not None else EventWriter(settings.paths.events)
        self.breakers: dict[str, CircuitBreaker] = {
            name: CircuitBreaker(
                name,
                failure_threshold=settings.circuit_failure_threshold,
                reset_seconds=settings.circuit_reset_seconds,
                on_transition=self._on_circuit,
            )
            for name in DEPENDENCIES
        }
        self.llm_extra = reasoning_kwargs(settings.llm_model)
        self.preresponse_extra = reasoning_kwargs(settings.preresponse_model)
        self.letta = LettaAccess(settings)
        self.memory = CoreMemoryCache(
            self.letta.blocks,
            breaker=self.breakers["letta"],
            refresh_seconds=settings.memory_refresh_seconds,
            timeout=settings.request_timeout_seconds,
            snapshot_path=settings.paths.memory_snapshot,
        )
        self.outbox = Outbox(settings.paths.outbox)
        self.sync = MemorySync(
            self.outbox,
            send=self._send_turn,
            already_delivered=self._turn_seen,
            breaker=self.breakers["letta"],
            emit=self.emit,
            timeout=settings.memory_sync_timeout_seconds,
            base_delay=settings.memory_sync_base_delay_seconds,
            max_delay=settings.memory_sync_max_delay_seconds,
        )
        self.sync_enabled = sync_enabled
        self._tasks: set[asyncio.Task[Any]] = set()
        self._probe_task: asyncio.Task[None] | None = None
        self._started = False
        self.turn_observers: list[Callable[[Turn, float], None]] = []

    # -- events

    def emit(self, event: str, **fields: object) -> None:
        """Write an event; never raises (the event log must not break a turn)."""
        try:
            self.events.emit(event, **fields)
        except Exception:
            log.warning("cannot write %s event", event, exc_info=True)

    def _on_circuit(self, name: str, before: str, to: str, failures: int) -> None:
        self.emit("circuit", dependency=name, failures=failures, **{"from": before, "to": to})
        log.info("circuit %s: %s -> %s (failures=%d)", name, before, to, failures)

    def observe_turn(self, turn: Turn, end: float) -> None:
        for observer in self.turn_observers:
            with contextlib.suppress(Exception):
                observer(turn, end)

    # -- clients

    def llm(self) -> LLMClient:
        """The brain's client of the fast LLM."""
        return brain_llm(self.settings)

    # -- memory outbox

    def queue_turn(
        self, user_text: str, assistant_text: str, *, otid: str, maybe_sent: bool = False
    ) -> None:
        """Queue a finished turn for Letta (on disk at once; delivery is in the background)."""
        try:
            self.sync.add(user_text, assistant_text, otid=otid, maybe_sent=maybe_sent)
        except Exception:
            log.error("cannot queue turn %s for Letta", otid, exc_info=True)

    async def _send_turn(self, turn: OutboxTurn, timeout: float) -> None:
        async with self.letta.message_lock:
            await self.letta.send_turn(
                turn.user_text, turn.assistant_text, otid=turn.otid, timeout=timeout
            )
        self.memory.refresh_soon()

    async def _turn_seen(self, turn: OutboxTurn, timeout: float) -> bool:
        """Whether Letta already has this turn (an earlier attempt may have reached it)."""
        await self.letta.wait_idle(timeout)
        return await self.letta.has_otid(turn.otid, timeout=timeout)

    # -- background work

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a coroutine in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed: %s", classify(task.exception()))

    def start(self, *, freeze_gc: bool = True) -> None:
        """Start the memory refresh, the outbox sender and the health probe.

        `freeze_gc` moves what exists now (modules, clients, settings) out of the garbage
        collector's reach: with several sessions in a process a full collection otherwise
        pauses the event loop for hundreds of milliseconds mid-turn.
        """
        if self._started:
            return
        if freeze_gc:
            freeze_heap()
        self._started = True
        self._loop = _loop_id()
        _live[self._loop] = _live.get(self._loop, 0) + 1
        self.memory.start()
        if self.sync_enabled:
            self.sync.start()
        self._probe_task = asyncio.create_task(self._probe_loop(), name="health_probe")

    async def aclose(self, flush_timeout: float = 0.0) -> None:
        """Stop background work (delivering pending turns for up to `flush_timeout` s)."""
        if self._probe_task is not None:
            await cancel_task(self._probe_task)
            self._probe_task = None
        if self._tasks:
            # queued enqueues must land on disk before we stop
            await asyncio.wait(set(self._tasks), timeout=5.0)
        await self.sync.stop(flush_timeout if self.sync_enabled else 0.0)
        self.pending_at_close = self.outbox.pending_count()
        await self.memory.stop()
        if self._started:
            _live[self._loop] = _live.get(self._loop, 1) - 1
        if _live.get(_loop_id(), 0) <= 0:
            _live.pop(_loop_id(), None)
            await close_letta_clients()
            await close_llm_clients()
        self.outbox.close()
        if self._own_events:
            self.events.close()
        self._started = False

    async def _probe_loop(self) -> None:
        interval = max(0.05, self.settings.health_probe_interval_seconds)
        checks: dict[str, Callable[[float], Awaitable[None]]] = {
            "llm": self._probe_llm,
            "letta": self.letta.health,
        }
        while True:
            await asyncio.sleep(interval)
            await asyncio.gather(
                *(self.probe(name, check) for name, check in checks.items()),
                return_exceptions=True,
            )

    async def probe(self, name: str, check: Callable[[float], Awaitable[None]]) -> bool | None:
        """One health check of a dependency, fed to its breaker.

        A closed circuit counts a failed check as a failure; an open circuit past its pause
        uses the check as its half-open trial, so recovery needs no user turn. Returns the
        outcome, or None when the circuit is open and not due.
        """
        breaker = self.breakers[name]
        state = breaker.state
        if state == HALF_OPEN:
            if not breaker.allow():
                return None
        elif state != CLOSED:
            return None
        timeout = min(2.0, self.settings.request_timeout_seconds)
        try:
            async with asyncio.timeout(timeout):
                await check(timeout)
        except asyncio.CancelledError:
            breaker.release()
            raise
        except Exception as exc:  # noqa: BLE001
            breaker.record_failure()
            log.debug("health probe %s failed: %s", name, classify(exc))
            return False
        if state == HALF_OPEN:
            breaker.record_success()
        return True

    async def _probe_llm(self, timeout: float) -> None:
        """The LLM endpoint answers HTTP (any status below 500 means it is up)."""
        await self.llm().probe(timeout)


def freeze_heap() -> None:
    """Collect once, then exempt every surviving object from future collections."""
    gc.collect()
    gc.freeze()
