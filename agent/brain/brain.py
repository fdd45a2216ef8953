"""The LLM step of the voice agent: hybrid streaming over Letta memory, the Letta path, fallbacks.

`Brain.reply(chat_ctx)` is an async iterator of text that never ends empty:

- hybrid (USE_HYBRID_STREAMING=true): the reply streams straight from the OpenAI-compatible LLM
  with Letta's core memory (cached) and the recent conversation in the prompt; the finished
  (user, assistant) pair goes to the durable outbox for Letta. The turn never waits on Letta.
- letta: the reply streams from the Letta agent itself.
- when a path fails the other serves (hybrid → letta, letta → direct LLM); when both fail, a
  validated fallback sentence. An optional filler from a small model can speak first.

`agent.voice_agent.VoiceAgent` plugs the brain into livekit-agents as its `llm_node`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from livekit.agents import llm

from agent.brain.primed import (
    PRERESPONSE_MAX_TOKENS,
    PRERESPONSE_PROMPT,
    PrimedStream,
    prime,
)
from agent.brain.turn import DIRECT, FALLBACK, HYBRID, LETTA, Turn
from agent.config import Settings
from agent.resilience import (
    CIRCUIT_OPEN,
    INTERRUPTED,
    RATE_LIMITED,
    UNAVAILABLE,
    DependencyError,
    RetryPolicy,
    call_with_retries,
    classify,
    fallback_sentence,
    validate_reply,
)

if TYPE_CHECKING:  # pragma: no cover
    from agent.brain.runtime import AgentRuntime

log = logging.getLogger("agent.brain")

DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant with a long-term memory. Answer in one to three short "
    "spoken sentences, plain text only: no lists, markdown or emoji. Use what you remember "
    "about the user naturally."
)


def instructions_for(settings: Settings) -> str:
    return settings.agent_instructions or DEFAULT_INSTRUCTIONS


# --------------------------------------------------------------------------- chat context


def last_user_text(chat_ctx: llm.ChatContext) -> str:
    for item in reversed(chat_ctx.items):
        if getattr(item, "type", None) == "message" and item.role == "user":
            return item.text_content or ""
    return ""


def history_messages(chat_ctx: llm.ChatContext, limit: int) -> list[dict[str, str]]:
    """The last `limit` user/assistant messages as OpenAI chat messages."""
    out: list[dict[str, str]] = []
    for item in reversed(chat_ctx.items):
        if getattr(item, "type", None) != "message" or item.role not in ("user", "assistant"):
            continue
        text = item.text_content
        if not text:
            continue
        out.append({"role": item.role, "content": text})
        if len(out) >= limit:
            break
    out.reverse()
    return out


# --------------------------------------------------------------------------- the brain


def _letta_retry(err: DependencyError) -> bool:
    return err.kind == RATE_LIMITED


class Brain:
    """One conversation's reply logic over a process-wide AgentRuntime."""

    def __init__(self, runtime: AgentRuntime, *, mode: str | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.mode = mode or (HYBRID if self.settings.use_hybrid_streaming else LETTA)
        s = self.settings
        self.policy = RetryPolicy(
            retries=s.retry_attempts,
            base_delay=s.retry_base_delay_seconds,
            attempt_timeout=s.request_timeout_seconds,
            jitter=s.retry_jitter,
        )
        self.last_turn: Turn | None = None
        self._instructions = instructions_for(s)

    # -- prompts

    def llm_messages(self, chat_ctx: llm.ChatContext) -> list[dict[str, str]]:
        """System prompt (instructions + cached core memory) and the recent conversation."""
        memory = self.runtime.memory.prompt_section()
        system = f"{self._instructions}\n\n{memory}" if memory else self._instructions
        msgs = [{"role": "system", "content": system}]
        msgs.extend(history_messages(chat_ctx, self.settings.hybrid_history_messages))
        return msgs

    # -- attempts (each returns a primed stream, or raises)

    async def _open_llm(self, messages: list[dict[str, str]], timeout: float) -> PrimedStream:
        stream = await self.runtime.llm().stream(
            model=self.settings.llm_model,
            messages=messages,
            timeout=timeout,
            **self.runtime.llm_extra,
        )
        primed = await prime(stream.texts(), on_close=stream.aclose)
        primed.usage = lambda: stream.usage
        return primed

    async def _open_letta(self, text: str, otid: str, timeout: float) -> PrimedStream:
        letta = self.runtime.letta
        lock = letta.message_lock
        await lock.acquire()

        async def release() -> None:
            if lock.locked():
                lock.release()

        try:
            source = letta.stream_reply(text, otid=otid, timeout=timeout)
        except BaseException:
            await release()
            raise
        return await prime(source, on_close=release)

    def _paths(self) -> list[str]:
        return [HYBRID, LETTA] if self.mode == HYBRID else [LETTA, DIRECT]

    async def _open_chain(self, turn: Turn, chat_ctx: llm.ChatContext) -> PrimedStream:
        """Try each path in order; the first that opens serves. Raises the last failure."""
        deadline = time.monotonic() + self.settings.turn_deadline_seconds
        paths = self._paths()
        failures: list[DependencyError] = []
        for i, path in enumerate(paths):
            dep = "letta" if path == LETTA else "llm"
            breaker = self.runtime.breakers[dep]
            if not breaker.allow():
                failures.append(DependencyError(CIRCUIT_OPEN, f"{dep} circuit open"))
                turn.errors.append(f"{path}:{CIRCUIT_OPEN}")
                continue
            breaker.release()  # call_with_retries takes the trial itself
            later = [p for p in paths[i + 1 :] if self._available(p)]
            # keep one attempt's time for a path that could still serve
            path_deadline = deadline - (self.settings.request_timeout_seconds if later else 0.0)
            if path_deadline <= time.monotonic():
                path_deadline = deadline

            def on_failure(err: DependencyError, retry: int, path: str = path) -> None:
                turn.errors.append(f"{path}:{err.kind}")

            if path == LETTA:
                turn.letta_tried = True
            try:
                stream = await call_with_retries(
                    self._attempt(path, turn, chat_ctx),
                    breaker=breaker,
                    policy=self.policy,
                    deadline=path_deadline,
                    on_failure=on_failure,
                    # Letta may have stored a message whose reply failed: sending it again
                    # would duplicate it, so only a refusal (429) is retried there
                    retry_if=_letta_retry if path == LETTA else None,
                )
            except Exception as exc:  # noqa: BLE001 - classified; the next path may serve
                err = classify(exc)
                failures.append(err)
                if i + 1 < len(paths):
                    self.runtime.emit(
                        "fallback", reason=err.kind, from_path=path, to_path=paths[i + 1],
                        turn=turn.otid,
                    )
                continue
            turn.path = path
            return stream  # type: ignore[return-value]
        # the sentence speaks to the first real failure (an open circuit says little)
        real = [f for f in failures if f.kind != CIRCUIT_OPEN]
        raise (real or failures or [DependencyError(UNAVAILABLE, "no path available")])[0]

    def _attempt(
        self, path: str, turn: Turn, chat_ctx: llm.ChatContext
    ) -> Callable[[float], Awaitable[PrimedStream]]:
        """The attempt function of a path: timeout -> a primed stream."""
        if path == LETTA:
            user_text, otid = turn.user_text, turn.otid
            return lambda timeout: self._open_letta(user_text, otid, timeout)
        messages = self.llm_messages(chat_ctx)
        return lambda timeout: self._open_llm(messages, timeout)

    def _available(self, path: str) -> bool:
        dep = "letta" if path == LETTA else "llm"
        return self.runtime.breakers[dep].state != "open"

    async def _preresponse(self, user_text: str) -> str | None:
        breaker = self.runtime.breakers["preresponse"]
        if not breaker.allow():
            return None
        timeout = self.settings.preresponse_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                text = await self.runtime.llm().complete(
                    model=self.settings.preresponse_model,
                    messages=[
                        {"role": "system", "content": PRERESPONSE_PROMPT},
                        {"role": "user", "content": user_text},
                    ],
                    timeout=timeout,
                    max_completion_tokens=PRERESPONSE_MAX_TOKENS,
                    **self.runtime.preresponse_extra,
                )
        except asyncio.CancelledError:
            breaker.release()
            raise
        except Exception as exc:  # noqa: BLE001
            breaker.record_failure()
            log.debug("pre-response failed: %s", classify(exc))
            return None
        breaker.record_success()
        text = text.strip()
        return text if validate_reply(text) and len(text) <= 80 else None

    # -- the turn

    async def reply(self, chat_ctx: llm.ChatContext) -> AsyncIterator[str]:
        """Stream the reply to the last user message of `chat_ctx`; never ends empty."""
        turn = Turn(mode=self.mode, user_text=last_user_text(chat_ctx))
        self.last_turn = turn
        stream: PrimedStream | None = None
        main: asyncio.Task[PrimedStream | None] | None = None
        try:
            if self.settings.fast_preresponse:
                main = asyncio.create_task(self._open(turn, chat_ctx))
                filler = await self._race_filler(turn, main)
                if filler:
                    turn.preresponse = True
                    turn.first_at = time.perf_counter()
                    turn.text.append(filler + " ")
                    yield filler + " "
                stream = await main
                main = None
            else:
                stream = await self._open(turn, chat_ctx)
            if stream is None:
                yield self._fallback(turn, turn.fallback_reason or UNAVAILABLE)
                return
            turn.main_first_at = time.perf_counter()
            if turn.first_at is None:
                turn.first_at = turn.main_first_at
            turn.text.append(stream.head)
            yield stream.head
            if stream.exhausted:
                return
            # a stalled stream ends through the clients' own read timeouts (per attempt)
            rest = stream.rest
            while True:
                try:
                    delta = await anext(rest)
                except StopAsyncIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - mid-stream failure
                    err = classify(exc)
                    turn.errors.append(f"{turn.path}:{err.kind}")
                    yield " " + self._fallback(turn, INTERRUPTED, stage="midstream")
                    break
                if delta:
                    turn.text.append(delta)
                    yield delta
        except (asyncio.CancelledError, GeneratorExit):
            turn.interrupted = True
            raise
        finally:
            if main is not None:  # left before the main reply was taken: drop it
                main.cancel()
                main.add_done_callback(self._close_unused)
            if stream is not None:
                turn.usage = stream.usage()
                self.runtime.spawn(stream.aclose())
            self._finish(turn)

    async def _open(self, turn: Turn, chat_ctx: llm.ChatContext) -> PrimedStream | None:
        """The first path that opens, or None (the failure kind goes to the turn)."""
        try:
            return await self._open_chain(turn, chat_ctx)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the turn must not go silent
            turn.fallback_reason = classify(exc).kind
            return None

    async def _race_filler(
        self, turn: Turn, main: asyncio.Task[PrimedStream | None]
    ) -> str | None:
        """The filler text if it is ready before the main reply, else None."""
        filler = asyncio.create_task(self._preresponse(turn.user_text))
        try:
            done, _ = await asyncio.wait({main, filler}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            filler.cancel()
            raise
        if main in done:
            filler.cancel()
            return None
        return filler.result()

    def _close_unused(self, task: asyncio.Task[PrimedStream | None]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        stream = task.result()
        if stream is not None:
            self.runtime.spawn(stream.aclose())

    def _fallback(self, turn: Turn, kind: str, *, stage: str = "reply") -> str:
        sentence = fallback_sentence(kind)
        turn.fallback = True
        turn.fallback_reason = kind
        if stage == "reply":
            turn.path = FALLBACK
            now = time.perf_counter()
            turn.main_first_at = now
            if turn.first_at is None:
                turn.first_at = now
        turn.text.append(sentence if stage == "reply" else " " + sentence)
        self.runtime.emit(
            "fallback", reason=kind, stage=stage, path=turn.path, turn=turn.otid,
            errors=turn.errors[-6:],
        )
        return sentence

    def _finish(self, turn: Turn) -> None:
        end = time.perf_counter()
        text = "".join(turn.text).strip()
        self.runtime.emit(
            "turn",
            mode=turn.mode,
            path=turn.path,
            ttft_ms=turn.ms(turn.first_at),
            total_ms=turn.ms(end),
            fallback=turn.fallback,
            fallback_reason=turn.fallback_reason,
            main_ttft_ms=turn.ms(turn.main_first_at),
            preresponse=turn.preresponse,
            interrupted=turn.interrupted,
            chars=len(text),
            errors=turn.errors[-6:],
            turn=turn.otid,
            source=self.runtime.source,
            **({"room": self.runtime.room} if self.runtime.room else {}),
            # tokens of the reply's LLM stream where the endpoint reported them
            **({"model": self.settings.llm_model, **turn.usage} if turn.usage else {}),
        )
        self.runtime.observe_turn(turn, end)
        # Letta saw the turn itself only when it served it; everything else goes to the outbox.
        if turn.path != LETTA and turn.user_text:
            self.runtime.queue_turn(
                turn.user_text, text, otid=turn.otid, maybe_sent=turn.letta_tried
            )
        elif turn.path == LETTA:
            self.runtime.memory.refresh_soon()


__all__ = [
    "Brain",
    "history_messages",
    "instructions_for",
    "last_user_text",
]
