"""The opening of a reply: a stream is served only once its first words look like a reply,
and a short filler may be spoken before it.

Priming lets the brain fall back to another path before anything was said: a path whose
stream fails or stays empty has not spoken yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from agent.resilience import EMPTY, DependencyError, validate_reply

PRERESPONSE_PROMPT = (
    "You produce the first few words a voice assistant says while it thinks about its answer. "
    "Reply with a brief natural acknowledgement of two to five words, such as 'Let me think.' "
    "or 'Good question.'. Never answer the question and never ask one."
)
PRERESPONSE_MAX_TOKENS = 16


class PrimedStream:
    """A reply stream whose opening text has arrived and is a plausible reply start."""

    def __init__(
        self,
        head: str,
        rest: AsyncIterator[str],
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.head = head
        self.rest = rest
        self._on_close = on_close
        self.exhausted = False
        #: the token counts the source reported ({"prompt_tokens", "completion_tokens"})
        self.usage: Callable[[], dict[str, int] | None] = lambda: None

    async def aclose(self) -> None:
        aclose = getattr(self.rest, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            with contextlib.suppress(Exception):
                await on_close()


async def prime(
    source: AsyncIterator[str], *, on_close: Callable[[], Awaitable[None]] | None = None
) -> PrimedStream:
    """Read `source` until its text could stand as a reply (≥3 chars with a letter or digit).

    Raises DependencyError(EMPTY) when the stream ends before that.
    """
    parts: list[str] = []
    size = 0
    try:
        async for delta in source:
            if not delta:
                continue
            parts.append(delta)
            size += len(delta)
            if size >= 3:
                head = "".join(parts)
                if validate_reply(head):
                    return PrimedStream(head, source, on_close=on_close)
    except BaseException:
        await PrimedStream("", source, on_close=on_close).aclose()
        raise
    head = "".join(parts)
    stream = PrimedStream(head, source, on_close=on_close)
    stream.exhausted = True
    if validate_reply(head):
        return stream
    await stream.aclose()
    raise DependencyError(EMPTY, "the reply was empty or had no words")


__all__ = ["PRERESPONSE_MAX_TOKENS", "PRERESPONSE_PROMPT", "PrimedStream", "prime"]
