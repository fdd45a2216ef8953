"""The reliability layer: circuit breakers, bounded retries, failure kinds and fallback replies.

Nothing here imports a provider SDK: failures are classified by duck typing (`status_code`,
exception class names), so the same code serves the OpenAI SDK, letta-client and livekit.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

# Failure kinds (also the `reason` of `fallback` events).
RATE_LIMITED = "rate_limited"
TIMEOUT = "timeout"
SERVER_ERROR = "server_error"
CONNECTION = "connection"
CLIENT_ERROR = "client_error"
EMPTY = "empty"
INVALID = "invalid"
CIRCUIT_OPEN = "circuit_open"
UNAVAILABLE = "unavailable"
INTERRUPTED = "interrupted"
UNKNOWN = "unknown"

RETRYABLE_KINDS = frozenset({RATE_LIMITED, TIMEOUT, SERVER_ERROR, CONNECTION, EMPTY, INVALID})

#: What the agent says when no path could answer, by the kind of the last failure.
FALLBACK_SENTENCES: dict[str, str] = {
    RATE_LIMITED: "I'm getting a lot of requests right now. Could you say that again in a moment?",
    TIMEOUT: "Sorry, I'm thinking a bit slowly right now. Could you repeat that?",
    SERVER_ERROR: "Sorry, something went wrong on my side. Could you say that again?",
    CONNECTION: "I'm having trouble reaching my brain right now. Please try again in a moment.",
    CLIENT_ERROR: "Sorry, I couldn't process that. Could you put it another way?",
    EMPTY: "Sorry, I lost my train of thought. Could you say that again?",
    INVALID: "Sorry, I lost my train of thought. Could you say that again?",
    CIRCUIT_OPEN: "I'm having a little trouble right now, but I'm still here. Please go on.",
    UNAVAILABLE: "I'm having a little trouble right now, but I'm still here. Please go on.",
    INTERRUPTED: "Sorry, I lost the connection for a moment.",
    UNKNOWN: "Sorry, I didn't catch that. Could you say it again?",
}

_HAS_WORD = re.compile(r"[^\W_]")


def validate_reply(text: str | None) -> bool:
    """A usable reply: non-empty, at least 3 characters, has a letter or a digit."""
    if not text:
        return False
    stripped = text.strip()
    return len(stripped) >= 3 and _HAS_WORD.search(stripped) is not None


def fallback_sentence(kind: str) -> str:
    """The validated fallback sentence for a failure kind (the generic one otherwise)."""
    sentence = FALLBACK_SENTENCES.get(kind) or FALLBACK_SENTENCES[UNKNOWN]
    if not validate_reply(sentence):  # a misconfigured table must still not go silent
        sentence = FALLBACK_SENTENCES[UNKNOWN]
    return sentence


class DependencyError(Exception):
    """A classified failure of a dependency call."""

    def __init__(self, kind: str, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message or kind)
        self.kind = kind
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


def classify(exc: BaseException) -> DependencyError:
    """Map any exception of an HTTP/SDK call to a DependencyError with a failure kind."""
    if isinstance(exc, DependencyError):
        return exc
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        status = status if isinstance(status, int) else None
    text = _describe(exc)
    if status is not None and status > 0:
        if status == 429:
            return DependencyError(RATE_LIMITED, text, status=status)
        if status == 408:
            return DependencyError(TIMEOUT, text, status=status)
        if status >= 500:
            return DependencyError(SERVER_ERROR, text, status=status)
        return DependencyError(CLIENT_ERROR, text, status=status)
    if isinstance(exc, TimeoutError):
        return DependencyError(TIMEOUT, text)
    chain = [type(e).__name__ for e in _causes(exc)]
    if any("Timeout" in name for name in chain):
        return DependencyError(TIMEOUT, text)
    if any(
        key in name
        for name in chain
        for key in ("Connection", "Connect", "Protocol", "ReadError", "Network", "Transport")
    ) or isinstance(exc, OSError | EOFError):
        return DependencyError(CONNECTION, text)
    return DependencyError(UNKNOWN, text)


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 8:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _describe(exc: BaseException) -> str:
    """A short, secret-free description: the class name and the first line of the message."""
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {msg[:200]}" if msg else type(exc).__name__


# --------------------------------------------------------------------------- circuit breaker

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

TransitionHook = Callable[[str, str, str, int], None]


class CircuitBreaker:
    """Closed → open after N consecutive failures → half-open after a pause, one trial at a time.

    `allow()` is O(1) and never blocks: an open circuit answers at once. In half-open state the
    first caller gets the trial; others are refused until the trial reports.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        reset_seconds: float = 30.0,
        on_transition: TransitionHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = max(1, failure_threshold)
        self.reset_seconds = reset_seconds
        self.on_transition = on_transition
        self._clock = clock
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_out = False

    @property
    def state(self) -> str:
        """The current state; an open circuit past its pause reads as half-open."""
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_seconds:
            return HALF_OPEN
        return self._state

    @property
    def failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """Whether a call may go ahead now (takes the trial when half-open)."""
        if self._state == CLOSED:
            return True
        if self._state == OPEN:
            if self._clock() - self._opened_at < self.reset_seconds:
                return False
            self._move(HALF_OPEN)
        if self._trial_out:
            return False
        self._trial_out = True
        return True

    def release(self) -> None:
        """Give back a trial that was taken but not used (e.g. the call was cancelled)."""
        self._trial_out = False

    def record_success(self) -> None:
        self._failures = 0
        self._trial_out = False
        if self._state != CLOSED:
            self._move(CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        self._trial_out = False
        if self._state == HALF_OPEN or (
            self._state == CLOSED and self._failures >= self.failure_threshold
        ):
            self._opened_at = self._clock()
            self._move(OPEN)
        elif self._state == OPEN:
            self._opened_at = self._clock()

    def _move(self, to: str) -> None:
        before, self._state = self._state, to
        if self.on_transition is not None and before != to:
            try:
                self.on_transition(self.name, before, to, self._failures)
            except Exception:  # an observer must never break the caller
                pass


# --------------------------------------------------------------------------- retries


def backoff_delay(
    retry: int, base: float, *, jitter: float = 0.2, rng: random.Random | None = None
) -> float:
    """Delay before retry number `retry` (0-based): base·2^retry, ± `jitter` (a fraction)."""
    delay = base * (2**retry)
    if jitter > 0:
        r = rng.random() if rng is not None else random.random()
        delay *= 1 + jitter * (2 * r - 1)
    return max(0.0, delay)


@dataclass
class RetryPolicy:
    """How a dependency call is retried: counts, delays, per-attempt timeout."""

    retries: int = 2
    base_delay: float = 2.0
    attempt_timeout: float = 10.0
    jitter: float = 0.2

    def delay(self, retry: int) -> float:
        return backoff_delay(retry, self.base_delay, jitter=self.jitter)

    def may_retry(self, retry: int, now: float, deadline: float) -> float | None:
        """The delay before retry `retry` if it may start before `deadline`, else None."""
        if retry >= self.retries:
            return None
        delay = self.delay(retry)
        if now + delay >= deadline:
            return None
        return delay


async def call_with_retries(
    fn: Callable[[float], object],
    *,
    breaker: CircuitBreaker,
    policy: RetryPolicy,
    deadline: float,
    on_failure: Callable[[DependencyError, int], None] | None = None,
    retry_if: Callable[[DependencyError], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> object:
    """Await `fn(timeout)` under the breaker, retrying retryable failures before `deadline`.

    `fn` receives the attempt's timeout (the per-attempt timeout capped by the deadline) and must
    return an awaitable. `retry_if` narrows which retryable failures are retried (a request
    that may have had an effect must not be repeated). Raises DependencyError (kind
    CIRCUIT_OPEN when the breaker refuses).
    """
    retry = 0
    last: DependencyError | None = None
    while True:
        if not breaker.allow():
            # our own failures may have opened it: report what actually went wrong
            raise last or DependencyError(CIRCUIT_OPEN, f"{breaker.name} circuit is open")
        remaining = deadline - clock()
        if remaining <= 0:
            breaker.release()
            raise DependencyError(TIMEOUT, "turn deadline passed")
        timeout = min(policy.attempt_timeout, remaining)
        try:
            async with asyncio.timeout(timeout):
                result = await fn(timeout)  # type: ignore[misc]
        except asyncio.CancelledError:
            breaker.release()
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is classified
            err = last = classify(exc)
            breaker.record_failure()
            if on_failure is not None:
                on_failure(err, retry)
            again = err.retryable and (retry_if is None or retry_if(err))
            delay = policy.may_retry(retry, clock(), deadline) if again else None
            if delay is None:
                raise err from exc
            await asyncio.sleep(delay)
            retry += 1
            continue
        breaker.record_success()
        return result


async def cancel_task(task: asyncio.Task[object] | None, timeout: float = 5.0) -> None:
    """Cancel a background task and wait (bounded) for it to end; never raises."""
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait({task}, timeout=timeout)
