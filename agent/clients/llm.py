"""A lean client for OpenAI-compatible chat completions: the brain's direct path to the model.

It speaks the wire protocol itself (one POST, Server-Sent Events parsed line by line with
aiohttp), so the hybrid path adds almost nothing to the model's own time to first token: the
OpenAI SDK costs a few milliseconds per request building and validating objects. Errors come
out as `DependencyError`s with a failure kind; there are no retries here (that is
`agent.resilience`'s job). One aiohttp session per process and event loop, keep-alive pooled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from agent.resilience import (
    CLIENT_ERROR,
    CONNECTION,
    RATE_LIMITED,
    SERVER_ERROR,
    TIMEOUT,
    UNKNOWN,
    DependencyError,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
log = logging.getLogger("agent.llm")


class LLMHTTPError(DependencyError):
    """An HTTP error status from the model endpoint."""

    def __init__(self, status: int, message: str) -> None:
        kind = (RATE_LIMITED if status == 429 else TIMEOUT if status == 408
                else SERVER_ERROR if status >= 500 else CLIENT_ERROR)
        super().__init__(kind, f"HTTP {status}: {message[:200]}", status=status)
        self.status_code = status


def _wrap(exc: BaseException) -> DependencyError:
    if isinstance(exc, DependencyError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return DependencyError(TIMEOUT, type(exc).__name__)
    if isinstance(exc, aiohttp.ClientError | OSError | EOFError):
        return DependencyError(CONNECTION, f"{type(exc).__name__}: {str(exc)[:200]}")
    return DependencyError(UNKNOWN, f"{type(exc).__name__}: {str(exc)[:200]}")


class ChatStream:
    """An open streaming response: `texts()` yields its text deltas; close it when done.

    `usage` holds the token counts ({"prompt_tokens", "completion_tokens"}) once a chunk
    carried them: the last one when `stream_options.include_usage` was asked (OpenAI), or a
    server's own final chunk (llama.cpp); None while unknown.
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.usage: dict[str, int] | None = None

    async def texts(self) -> AsyncIterator[str]:
        content = self._response.content
        try:
            async for raw in content:
                if not raw.startswith(b"data:"):
                    continue
                data = raw[5:].strip()
                if data == b"[DONE]":
                    return
                if not data:
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    err = chunk["error"] or {}
                    raise LLMHTTPError(int(err.get("code") or 500) if str(
                        err.get("code", "")).isdigit() else 500, str(err.get("message", "")))
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    self.usage = _token_counts(usage) or self.usage
                choices = chunk.get("choices")
                if not choices:
                    continue
                delta = choices[0].get("delta")
                text = delta.get("content") if delta else None
                if text:
                    yield text
        except DependencyError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, EOFError, ValueError) as exc:
            raise _wrap(exc) from exc

    async def aclose(self) -> None:
        self._response.close()


class LLMClient:
    """OpenAI-compatible chat completions over one pooled aiohttp session."""

    def __init__(self, base_url: str | None, api_key: str, *, connect_timeout: float = 5.0) -> None:
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
        }
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        #: False once the endpoint refused `stream_options` (some OpenAI-compatible servers
        #: answer 400 to fields they do not know): streams are then opened without it.
        self.asks_usage = True

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
                json_serialize=json.dumps,
            )
        return self._session

    def _timeout(self, timeout: float) -> aiohttp.ClientTimeout:
        # no total: a long reply may stream for longer than one read may stall
        return aiohttp.ClientTimeout(
            total=None, sock_connect=min(self._connect_timeout, timeout), sock_read=timeout
        )

    async def _post(
        self, path: str, body: dict[str, Any], timeout: float
    ) -> aiohttp.ClientResponse:
        try:
            response = await self._http().post(
                self.base_url + path, data=json.dumps(body).encode(), headers=self._headers,
                timeout=self._timeout(timeout),
            )
        except Exception as exc:
            raise _wrap(exc) from exc
        if response.status >= 400:
            try:
                message = (await response.text())[:300]
            except Exception:  # noqa: BLE001
                message = ""
            finally:
                response.release()
            raise LLMHTTPError(response.status, _error_message(message))
        return response

    async def stream(
        self, *, model: str, messages: list[dict[str, Any]], timeout: float, **extra: Any
    ) -> ChatStream:
        """Start a streaming completion; returns once the response headers are in.

        Usage is asked for (`stream_options.include_usage`) until the endpoint refuses it:
        a 400/422 to the request with it, followed by a success without it, turns it off for
        this client (one extra round trip, once). A request that fails either way raises the
        second answer's error.
        """
        body = {"model": model, "messages": messages, "stream": True, **extra}
        if not self.asks_usage or "stream_options" in extra:
            return ChatStream(await self._post("/chat/completions", body, timeout))
        try:
            return ChatStream(await self._post(
                "/chat/completions",
                {**body, "stream_options": {"include_usage": True}}, timeout))
        except LLMHTTPError as exc:
            if exc.status_code not in (400, 422):
                raise
        stream = ChatStream(await self._post("/chat/completions", body, timeout))
        self.asks_usage = False
        log.info("%s refused stream_options: token usage of its streams is not asked for",
                 self.base_url)
        return stream

    async def complete(
        self, *, model: str, messages: list[dict[str, Any]], timeout: float, **extra: Any
    ) -> str:
        """A whole (non-streaming) completion's text."""
        body = {"model": model, "messages": messages, **extra}
        response = await self._post("/chat/completions", body, timeout)
        try:
            data = await response.json(content_type=None)
        except Exception as exc:
            raise _wrap(exc) from exc
        finally:
            response.release()
        choices = data.get("choices") or []
        message = (choices[0].get("message") or {}) if choices else {}
        return str(message.get("content") or "")

    async def probe(self, timeout: float) -> None:
        """Raise unless the endpoint answers HTTP (any status below 500 is alive)."""
        try:
            async with self._http().get(
                self.base_url + "/models", headers=self._headers, timeout=self._timeout(timeout)
            ) as response:
                if response.status >= 500:
                    raise LLMHTTPError(response.status, "health probe")
                await response.read()
        except DependencyError:
            raise
        except Exception as exc:
            raise _wrap(exc) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _token_counts(usage: dict[str, Any]) -> dict[str, int] | None:
    """{"prompt_tokens", "completion_tokens"} of a usage object, None without numbers."""
    out = {name: int(usage[name]) for name in ("prompt_tokens", "completion_tokens")
           if isinstance(usage.get(name), int | float) and not isinstance(usage[name], bool)}
    return out or None


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
        return str((data.get("error") or {}).get("message") or body)
    except (ValueError, AttributeError):
        return body


_clients: dict[tuple[int, int, str, str], LLMClient] = {}


def llm_client(base_url: str | None, api_key: str) -> LLMClient:
    """The process's client for this endpoint and event loop."""
    try:
        loop_id = id(asyncio.get_running_loop())
    except RuntimeError:
        loop_id = 0
    key = (os.getpid(), loop_id, base_url or "", api_key)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = LLMClient(base_url, api_key)
    return client


async def close_llm_clients() -> None:
    """Close this process's clients of the running loop."""
    try:
        loop_id = id(asyncio.get_running_loop())
    except RuntimeError:
        loop_id = 0
    for key in [k for k in _clients if k[0] == os.getpid() and k[1] == loop_id]:
        await _clients.pop(key).aclose()
