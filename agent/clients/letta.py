"""Letta access for the agent: one pooled AsyncLetta per process (and event loop).

`letta_client` is imported lazily so that `import agent.*` stays cheap. Every call here is a
plain coroutine with no retry of its own (the client's `max_retries` is 0): retries, timeouts
and circuit breaking belong to `agent.resilience`.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import time
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.config import Settings
from agent.memory import letta_agent_spec

if TYPE_CHECKING:  # pragma: no cover
    from letta_client import AsyncLetta

_clients: dict[tuple[int, int, str], AsyncLetta] = {}


async def preload_letta_client() -> None:
    """Import letta_client in a worker thread (a ~0.3 s import must not stall the loop)."""
    if "letta_client" not in sys.modules or not hasattr(sys.modules["letta_client"], "AsyncLetta"):
        await asyncio.to_thread(importlib.import_module, "letta_client")


def get_letta(settings: Settings) -> AsyncLetta:
    """The process's AsyncLetta for this event loop and server (created on first use)."""
    from letta_client import AsyncLetta

    try:
        loop_id = id(asyncio.get_running_loop())
    except RuntimeError:
        loop_id = 0
    key = (os.getpid(), loop_id, settings.letta_server_url)
    client = _clients.get(key)
    if client is None:
        client = AsyncLetta(
            base_url=settings.letta_server_url.rstrip("/"),
            api_key=settings.letta_api_key or "local",
            max_retries=0,
            timeout=settings.request_timeout_seconds,
        )
        _clients[key] = client
    return client


async def close_letta_clients() -> None:
    """Close the clients of this process and loop (at the end of a job or chat)."""
    try:
        loop_id = id(asyncio.get_running_loop())
    except RuntimeError:
        loop_id = 0
    for key in [k for k in _clients if k[0] == os.getpid() and k[1] == loop_id]:
        client = _clients.pop(key)
        try:
            await client.close()
        except Exception:
            pass


class LettaAccess:
    """The agent's view of its Letta agent: reply streams, memory blocks and turn delivery."""

    def __init__(self, settings: Settings, *, create_missing: bool = True) -> None:
        self.settings = settings
        self.create_missing = create_missing
        self._agent_id: str | None = settings.letta_agent_id or None
        self._resolve_lock = asyncio.Lock()
        #: Serialises message traffic to the agent (Letta processes one request at a time).
        self.message_lock = asyncio.Lock()

    @property
    def client(self) -> AsyncLetta:
        return get_letta(self.settings)

    async def aclient(self) -> AsyncLetta:
        """The client, importing letta_client in a thread first (never on the event loop)."""
        await preload_letta_client()
        return get_letta(self.settings)

    @property
    def agent_id(self) -> str | None:
        return self._agent_id

    async def resolve_agent_id(self, timeout: float | None = None) -> str:
        """The agent id from LETTA_AGENT_ID, else by LETTA_AGENT_NAME (created if missing)."""
        if self._agent_id:
            return self._agent_id
        async with self._resolve_lock:
            if self._agent_id:
                return self._agent_id
            client = await self.aclient()
            name = self.settings.letta_agent_name
            page = await client.agents.list(name=name, limit=50, timeout=timeout)
            found = [a for a in page.items if getattr(a, "name", None) == name
                     and "sleeptime" not in str(getattr(a, "agent_type", "") or "")]
            if found:  # the newest, as `voicectl letta agents` shows it
                found.sort(key=lambda a: str(getattr(a, "created_at", "") or ""))
                self._agent_id = found[-1].id
            elif self.create_missing:
                self._agent_id = await self._create_agent(client, name, timeout)
            else:
                raise LookupError(f"no Letta agent named {name!r}")
            return self._agent_id

    async def _create_agent(self, client: AsyncLetta, name: str, timeout: float | None) -> str:
        """Create the voice agent exactly as `voicectl letta create` does (agent/
        letta_agent_spec.py): first use, when none of that name exists."""
        models = await client.models.list(timeout=timeout)
        handles = [m.handle for m in models if getattr(m, "handle", None)]
        args = letta_agent_spec.create_args_for(self.settings, name, handles)
        created = await client.agents.create(**args, timeout=timeout)
        return created.id

    async def health(self, timeout: float) -> None:
        """Raise unless Letta answers its health endpoint."""
        await (await self.aclient()).health(timeout=timeout)

    async def blocks(self, timeout: float | None = None) -> list[tuple[str, str]]:
        """The agent's core memory blocks as (label, value) pairs."""
        agent_id = await self.resolve_agent_id(timeout)
        page = await (await self.aclient()).agents.blocks.list(agent_id, timeout=timeout)
        return [(b.label or "memory", b.value or "") for b in page.items]

    async def stream_reply(
        self, text: str, *, otid: str | None = None, timeout: float | None = None
    ) -> AsyncIterator[str]:
        """Stream the Letta agent's reply to a user message, as text deltas."""
        agent_id = await self.resolve_agent_id(timeout)
        client = await self.aclient()
        message: dict[str, Any] = {"role": "user", "content": text}
        if otid:
            message["otid"] = otid
        # The dedicated stream endpoint is what Letta 0.16.8 serves (letta-client marks it
        # deprecated in favour of `create(streaming=True)`, which that server predates).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pending = client.agents.messages.stream(
                agent_id,
                messages=[message],  # type: ignore[list-item]
                stream_tokens=True,
                timeout=timeout,
            )
        stream = await pending
        try:
            async for chunk in stream:
                kind = getattr(chunk, "message_type", None)
                if kind == "assistant_message":
                    delta = _content_text(getattr(chunk, "content", None))
                    if delta:
                        yield delta
                elif kind == "error_message":
                    raise LettaStreamError(str(getattr(chunk, "message", "") or "error"))
                elif kind == "stop_reason":
                    reason = str(getattr(chunk, "stop_reason", "") or "")
                    if reason and reason not in ("end_turn", "max_steps", "requires_approval"):
                        raise LettaStreamError(f"stop reason {reason}")
        finally:
            await stream.close()

    async def send_turn(
        self, user: str, assistant: str, *, otid: str, timeout: float | None = None
    ) -> None:
        """Deliver a (user, assistant) pair that Letta did not see, tagged with `otid`."""
        agent_id = await self.resolve_agent_id(timeout)
        await (await self.aclient()).agents.messages.create(
            agent_id,
            messages=[
                {"role": "user", "content": user, "otid": otid},
                {"role": "assistant", "content": assistant, "otid": f"{otid}-a"},
            ],  # type: ignore[list-item]
            max_steps=1,
            timeout=timeout,
        )

    async def wait_idle(self, timeout: float, *, stale_after: float = 300.0) -> bool:
        """Wait until the agent has no run in progress (True), or `timeout` passes (False).

        A request whose client gave up may still be running on the server; looking for its
        messages before it ends would miss them. Runs older than `stale_after` seconds (left
        behind by a server that was killed) are ignored.
        """
        agent_id = await self.resolve_agent_id(timeout)
        end = time.monotonic() + timeout
        while True:
            page = await (await self.aclient()).runs.list(
                agent_id=agent_id, active=True, limit=20, timeout=timeout
            )
            now = datetime.now(UTC)
            live = [
                run for run in page.items
                if run.created_at is None
                or (now - run.created_at).total_seconds() < stale_after
            ]
            if not live:
                return True
            if time.monotonic() >= end:
                return False
            await asyncio.sleep(0.2)

    async def has_otid(self, otid: str, *, timeout: float | None = None, scan: int = 200) -> bool:
        """Whether a message with this otid is in the agent's recent history."""
        agent_id = await self.resolve_agent_id(timeout)
        page = await (await self.aclient()).agents.messages.list(
            agent_id, limit=scan, order="desc", timeout=timeout
        )
        return any(getattr(m, "otid", None) == otid for m in page.items)


class LettaStreamError(RuntimeError):
    """Letta reported an error inside a reply stream."""

    status_code = 502


def _content_text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(getattr(part, "text", "") or "") for part in content)
    return str(content)
