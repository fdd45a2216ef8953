"""Letta access for the agent: one pooled AsyncLetta per process (and event loop).

`letta_client` is imported lazily so that `import agent.*` stays cheap. Every call here is a
plain coroutine with no retry of its own (the client's `max_retries` is 0): retries, timeouts
and circuit breaking belong to `agent.resilience`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent.config import Settings

if TYPE_CHECKING:  # pragma: no cover
    from letta_client import AsyncLetta

DEFAULT_PERSONA = (
    "I am a friendly voice assistant. I keep my spoken replies short and natural, and I "
    "remember what the user tells me."
)
DEFAULT_HUMAN = "Nothing is known about the user yet."

_clients: dict[tuple[int, int, str], AsyncLetta] = {}


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
            api_key=settings.letta_api_key or None,
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


def letta_model_handle(settings: Settings) -> str:
    """The Letta model handle of new agents: `openai-proxy/<model>` behind a custom endpoint."""
    model = settings.letta_llm_model
    if "/" in model:
        return model
    base = settings.openai_base_url
    if base and (urlsplit(base).hostname or "") != "api.openai.com":
        return f"openai-proxy/{model}"
    return f"openai/{model}"


def embedding_config(settings: Settings) -> dict[str, Any]:
    """The embedding config of new agents (Letta lists no embedding models of a proxy)."""
    return {
        "embedding_endpoint_type": "openai",
        "embedding_endpoint": settings.openai_base_url or "https://api.openai.com/v1",
        "embedding_model": settings.letta_embedding_model,
        "embedding_dim": settings.letta_embedding_dim,
    }


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
            client = self.client
            name = self.settings.letta_agent_name
            page = await client.agents.list(name=name, limit=10, timeout=timeout)
            found = [a for a in page.items if getattr(a, "name", None) == name]
            if found:
                self._agent_id = found[0].id
            elif self.create_missing:
                created = await client.agents.create(
                    name=name,
                    model=letta_model_handle(self.settings),
                    embedding_config=embedding_config(self.settings),  # type: ignore[arg-type]
                    memory_blocks=[
                        {"label": "persona", "value": DEFAULT_PERSONA},
                        {"label": "human", "value": DEFAULT_HUMAN},
                    ],
                    timeout=timeout,
                )
                self._agent_id = created.id
            else:
                raise LookupError(f"no Letta agent named {name!r}")
            return self._agent_id

    async def health(self, timeout: float) -> None:
        """Raise unless Letta answers its health endpoint."""
        await self.client.health(timeout=timeout)

    async def blocks(self, timeout: float | None = None) -> list[tuple[str, str]]:
        """The agent's core memory blocks as (label, value) pairs."""
        agent_id = await self.resolve_agent_id(timeout)
        page = await self.client.agents.blocks.list(agent_id, timeout=timeout)
        return [(b.label or "memory", b.value or "") for b in page.items]

    async def stream_reply(
        self, text: str, *, otid: str | None = None, timeout: float | None = None
    ) -> AsyncIterator[str]:
        """Stream the Letta agent's reply to a user message, as text deltas."""
        agent_id = await self.resolve_agent_id(timeout)
        message: dict[str, Any] = {"role": "user", "content": text}
        if otid:
            message["otid"] = otid
        stream = await self.client.agents.messages.stream(
            agent_id,
            messages=[message],  # type: ignore[list-item]
            stream_tokens=True,
            timeout=timeout,
        )
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
        await self.client.agents.messages.create(
            agent_id,
            messages=[
                {"role": "user", "content": user, "otid": otid},
                {"role": "assistant", "content": assistant, "otid": f"{otid}-a"},
            ],  # type: ignore[list-item]
            max_steps=1,
            timeout=timeout,
        )

    async def has_otid(self, otid: str, *, timeout: float | None = None, scan: int = 200) -> bool:
        """Whether a message with this otid is in the agent's recent history."""
        agent_id = await self.resolve_agent_id(timeout)
        page = await self.client.agents.messages.list(
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
