"""The reliability layer on its own: breaker states, retries, classification, validation."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from agent import resilience as r


class Clock:
    """A manual clock for breaker timing (the breaker takes any monotonic callable)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_half_opens_with_one_trial() -> None:
    clock = Clock()
    seen: list[tuple[str, str, int]] = []
    br = r.CircuitBreaker("llm", failure_threshold=3, reset_seconds=30, clock=clock,
                          on_transition=lambda n, a, b, f: seen.append((a, b, f)))
    for _ in range(2):
        assert br.allow()
        br.record_failure()
    assert br.state == r.CLOSED
    br.record_failure()
    assert br.state == r.OPEN and not br.allow()
    clock.now += 29.9
    assert not br.allow()
    clock.now += 0.2
    assert br.state == r.HALF_OPEN
    assert br.allow()  # the one trial
    assert not br.allow()  # nobody else while it runs
    br.record_failure()  # trial failed: open again, timer restarted
    assert br.state == r.OPEN and not br.allow()
    clock.now += 30
    assert br.allow()
    br.record_success()
    assert br.state == r.CLOSED and br.allow() and br.failures == 0
    assert seen == [("closed", "open", 3), ("open", "half_open", 3), ("half_open", "open", 4),
                    ("open", "half_open", 4), ("half_open", "closed", 0)]


def test_breaker_success_resets_consecutive_count_and_release_returns_trial() -> None:
    clock = Clock()
    br = r.CircuitBreaker("letta", failure_threshold=3, reset_seconds=1, clock=clock)
    br.record_failure()
    br.record_failure()
    br.record_success()
    br.record_failure()
    br.record_failure()
    assert br.state == r.CLOSED  # not three in a row
    br.record_failure()
    clock.now += 1
    assert br.allow()
    br.release()  # the trial was not used
    assert br.allow()


def test_backoff_doubles_with_bounded_jitter() -> None:
    rng = random.Random(7)
    for retry, base in ((0, 2.0), (1, 4.0)):
        delays = [r.backoff_delay(retry, 2.0, jitter=0.2, rng=rng) for _ in range(200)]
        assert min(delays) >= base * 0.8 and max(delays) <= base * 1.2
        assert max(delays) - min(delays) > base * 0.1  # really jittered
    assert r.backoff_delay(1, 2.0, jitter=0) == 4.0


def test_retry_policy_respects_count_and_deadline() -> None:
    policy = r.RetryPolicy(retries=2, base_delay=2.0, jitter=0)
    assert policy.may_retry(0, now=0, deadline=20) == 2.0
    assert policy.may_retry(1, now=2, deadline=20) == 4.0
    assert policy.may_retry(2, now=6, deadline=20) is None  # only 2 retries
    assert policy.may_retry(1, now=17, deadline=20) is None  # would start past the deadline


@pytest.mark.parametrize(
    ("text", "ok"),
    [("Hello there.", True), ("Hi!", True), ("42", False), ("123", True), ("", False),
     (None, False), ("  \n ", False), ("...", False), ("?!", False), ("  ok  ", False),
     ("Ça va", True)],
)
def test_validate_reply(text: str | None, ok: bool) -> None:
    assert r.validate_reply(text) is ok


def test_every_fallback_sentence_is_valid() -> None:
    for kind in [*r.FALLBACK_SENTENCES, "no-such-kind"]:
        assert r.validate_reply(r.fallback_sentence(kind))
    assert r.fallback_sentence(r.RATE_LIMITED) != r.fallback_sentence(r.TIMEOUT)


class StatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.status_code = status


class APIConnectionError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "kind", "retryable"),
    [
        (StatusError(429), r.RATE_LIMITED, True),
        (StatusError(503), r.SERVER_ERROR, True),
        (StatusError(401), r.CLIENT_ERROR, False),
        (TimeoutError(), r.TIMEOUT, True),
        (ConnectionRefusedError(), r.CONNECTION, True),
        (APIConnectionError("boom"), r.CONNECTION, True),
        (ValueError("odd"), r.UNKNOWN, False),
    ],
)
def test_classify(exc: Exception, kind: str, retryable: bool) -> None:
    err = r.classify(exc)
    assert (err.kind, err.retryable) == (kind, retryable)


async def test_call_with_retries_retries_then_succeeds() -> None:
    br = r.CircuitBreaker("x", failure_threshold=5, reset_seconds=1)
    calls: list[float] = []
    failures: list[str] = []

    async def flaky(timeout: float) -> str:
        calls.append(timeout)
        if len(calls) < 3:
            raise StatusError(500)
        return "ok"

    policy = r.RetryPolicy(retries=2, base_delay=0.01, attempt_timeout=1.0)
    result = await r.call_with_retries(
        flaky, breaker=br, policy=policy, deadline=time.monotonic() + 5,
        on_failure=lambda e, n: failures.append(e.kind),
    )
    assert result == "ok" and len(calls) == 3 and failures == ["server_error"] * 2
    assert br.state == r.CLOSED and br.failures == 0


async def test_call_with_retries_times_out_each_attempt_and_opens_breaker() -> None:
    br = r.CircuitBreaker("x", failure_threshold=3, reset_seconds=60)

    async def hang(timeout: float) -> None:
        await asyncio.sleep(10)

    policy = r.RetryPolicy(retries=2, base_delay=0.01, attempt_timeout=0.05)
    with pytest.raises(r.DependencyError) as info:
        await r.call_with_retries(hang, breaker=br, policy=policy,
                                  deadline=time.monotonic() + 5)
    assert info.value.kind == r.TIMEOUT
    assert br.state == r.OPEN
    with pytest.raises(r.DependencyError) as info:
        await r.call_with_retries(hang, breaker=br, policy=policy,
                                  deadline=time.monotonic() + 5)
    assert info.value.kind == r.CIRCUIT_OPEN


async def test_no_retry_for_client_errors_or_past_the_deadline() -> None:
    br = r.CircuitBreaker("x", failure_threshold=10, reset_seconds=1)
    calls = 0

    async def bad(timeout: float) -> None:
        nonlocal calls
        calls += 1
        raise StatusError(400)

    policy = r.RetryPolicy(retries=2, base_delay=0.01, attempt_timeout=1)
    with pytest.raises(r.DependencyError):
        await r.call_with_retries(bad, breaker=br, policy=policy, deadline=time.monotonic() + 5)
    assert calls == 1

    calls = 0

    async def busy(timeout: float) -> None:
        nonlocal calls
        calls += 1
        raise StatusError(429)

    slow = r.RetryPolicy(retries=2, base_delay=1.0, attempt_timeout=1)
    with pytest.raises(r.DependencyError) as info:
        await r.call_with_retries(busy, breaker=br, policy=slow, deadline=time.monotonic() + 0.5)
    assert calls == 1 and info.value.kind == r.RATE_LIMITED


async def test_retry_if_limits_what_is_repeated() -> None:
    br = r.CircuitBreaker("letta", failure_threshold=10, reset_seconds=1)
    calls = 0

    async def fails(timeout: float) -> None:
        nonlocal calls
        calls += 1
        raise StatusError(500 if calls == 1 else 429)

    policy = r.RetryPolicy(retries=2, base_delay=0.01, attempt_timeout=1)
    only_429 = lambda e: e.kind == r.RATE_LIMITED  # noqa: E731
    with pytest.raises(r.DependencyError) as info:
        await r.call_with_retries(fails, breaker=br, policy=policy, retry_if=only_429,
                                  deadline=time.monotonic() + 5)
    assert calls == 1 and info.value.kind == r.SERVER_ERROR
