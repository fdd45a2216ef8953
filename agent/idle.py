"""End a silent voice session politely after VOICE_IDLE_TIMEOUT_SECONDS."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent.resilience import cancel_task

log = logging.getLogger("agent.idle")

GOODBYE = (
    "It's been quiet for a while, so I'll hang up now. Talk to you soon!"
)
ACTIVITY_EVENTS = (
    "user_input_transcribed",
    "conversation_item_added",
    "user_state_changed",
    "agent_state_changed",
)


class IdleWatchdog:
    """Watches an AgentSession; after `timeout` s without activity, says goodbye and ends it."""

    def __init__(
        self,
        session: Any,
        timeout: float,
        on_idle: Callable[[], Awaitable[None] | None],
        *,
        goodbye: str = GOODBYE,
        say_timeout: float = 15.0,
    ) -> None:
        self.session = session
        self.timeout = timeout
        self.on_idle = on_idle
        self.goodbye = goodbye
        self.say_timeout = say_timeout
        self.last_activity = time.monotonic()
        self.fired = False
        self._task: asyncio.Task[None] | None = None
        for name in ACTIVITY_EVENTS:
            session.on(name, self._touch)

    def _touch(self, *_: object) -> None:
        self.last_activity = time.monotonic()

    def busy(self) -> bool:
        """The user is speaking or the agent is thinking/speaking: not idle."""
        user = getattr(self.session, "user_state", "listening")
        agent = getattr(self.session, "agent_state", "listening")
        return user == "speaking" or agent in ("thinking", "speaking")

    def start(self) -> None:
        if self.timeout > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="idle_watchdog")

    async def stop(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            await cancel_task(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            idle = time.monotonic() - self.last_activity
            if self.busy():
                self._touch()
                idle = 0.0
            if idle >= self.timeout:
                break
            await asyncio.sleep(min(self.timeout - idle, max(0.05, self.timeout / 4)))
        self.fired = True
        log.info("session idle for %.0f s: ending it", self.timeout)
        try:
            handle = self.session.say(self.goodbye, allow_interruptions=False)
            async with asyncio.timeout(self.say_timeout):
                await handle.wait_for_playout()
        except Exception:  # noqa: BLE001 - the goodbye is best effort
            log.debug("goodbye failed", exc_info=True)
        result = self.on_idle()
        if asyncio.iscoroutine(result):
            await result
