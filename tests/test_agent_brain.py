"""Text-only AgentSession turns against the OpenAI-compatible stub over real HTTP.

Letta is unreachable here (a refused port): the hybrid path must answer without it, queue the
turn in the outbox, and every fault of the LLM must still produce a spoken, non-empty reply.
Timing is never asserted (benchmarks measure it); only paths, counts and events.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import resilience as r
from agent.brain.turn import DIRECT, FALLBACK, HYBRID
from agent.memory.cache import render_blocks
from agent.state_paths import MEMORY_SNAPSHOT_NAME
from tests.fakes.openai_stub import StubHandle
from tests.support.agent import events, make_settings, text_agent

pytestmark = pytest.mark.timeout(60)


def chat_requests(stub: StubHandle) -> list[dict]:
    return stub.requests("/v1/chat/completions")


async def test_hybrid_turn_streams_from_llm_and_queues_for_letta(
    stub: StubHandle, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url)
    async with text_agent(settings) as agent:
        reply = await agent.say("Hello there")
        assert reply == "You said: Hello there."
        assert agent.turn.path == HYBRID and not agent.turn.fallback
        second = await agent.say("And again")
        assert second == "You said: And again."
        body = chat_requests(stub)[-1]["body"]
        assert body["stream"] is True and body["model"] == "gpt-5-mini"
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["system", "user", "assistant", "user"]  # recent conversation included
        await agent.runtime.sync.flush(0.2)
        # Letta is down: both turns wait in the outbox, in order
        rows = agent.runtime.outbox.all_turns()
        assert [row["user_text"] for row in rows] == ["Hello there", "And again"]
        assert all(row["delivered"] is None for row in rows)
    turns = events(settings, "turn")
    assert [t["path"] for t in turns] == ["hybrid", "hybrid"]
    assert all(t["ttft_ms"] is not None and t["total_ms"] >= t["ttft_ms"] for t in turns)
    assert all(t["mode"] == "hybrid" and t["fallback"] is False for t in turns)


async def test_hybrid_prompt_carries_cached_core_memory(stub: StubHandle, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url)
    async with text_agent(settings) as agent:
        agent.runtime.memory.set_blocks([("human", "name: Ann\nfavourite colour: green")])
        assert await agent.say("What is my name?") == "Your name is Ann."
        system = chat_requests(stub)[-1]["body"]["messages"][0]["content"]
        assert "<human>" in system and "name: Ann" in system


@pytest.mark.parametrize(
    ("fault", "error"),
    [("429", "rate_limited"), ("500", "server_error"), ("hang", "timeout"),
     ("empty", "empty")],
)
async def test_one_fault_is_retried_on_the_same_path(
    stub: StubHandle, tmp_path: Path, fault: str, error: str
) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url, REQUEST_TIMEOUT_SECONDS="0.5")
    async with text_agent(settings) as agent:
        stub.control(fault=fault, fault_count=1)
        assert await agent.say("How are you") == "You said: How are you."
        assert agent.turn.path == HYBRID and not agent.turn.fallback
        assert agent.turn.errors == [f"hybrid:{error}"]
        assert len(chat_requests(stub)) == 2
        assert agent.runtime.breakers["llm"].state == r.CLOSED


async def test_disconnect_mid_stream_finishes_the_sentence_politely(
    stub: StubHandle, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url)
    async with text_agent(settings) as agent:
        stub.control(fault="disconnect", fault_count=1, disconnect_after_tokens=2)
        reply = await agent.say("Tell me a story")
        assert reply.startswith("You said:")
        assert reply.endswith(r.fallback_sentence(r.INTERRUPTED))
        assert agent.turn.fallback and agent.turn.path == HYBRID
        assert await agent.say("Thanks") == "You said: Thanks."
    (fb,) = events(settings, "fallback")
    assert fb["reason"] == r.INTERRUPTED and fb["stage"] == "midstream"


async def test_persistent_failure_opens_breaker_and_every_turn_is_answered(
    stub: StubHandle, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url)
    async with text_agent(settings) as agent:
        stub.control(fault="500")  # always
        first = await agent.say("Are you there")
        assert first == r.fallback_sentence(r.SERVER_ERROR)
        assert agent.turn.path == FALLBACK and agent.turn.fallback
        assert agent.runtime.breakers["llm"].state == r.OPEN
        assert len(chat_requests(stub)) == 3  # one attempt + two retries, then the breaker

        # open circuits answer at once, without touching the LLM
        before = len(chat_requests(stub))
        for text in ("Hello?", "Anyone home"):
            reply = await agent.say(text)
            assert r.validate_reply(reply) and agent.turn.path == FALLBACK
        assert len(chat_requests(stub)) == before
        assert agent.turn.errors[0] == "hybrid:circuit_open"

        # the LLM recovers: after the reset pause one trial (the health probe's, so no user
        # turn is spent on it) closes the circuit again. A turn while that trial is out is
        # refused by design, so wait for the close rather than for the pause alone.
        stub.control(fault=None)
        await _wait_for(lambda: agent.runtime.breakers["llm"].state == r.CLOSED, 3.0)
        assert await agent.say("Back again") == "You said: Back again."
        assert agent.runtime.breakers["llm"].state == r.CLOSED
    transitions = [(c["from"], c["to"]) for c in events(settings, "circuit")
                   if c["dependency"] == "llm"]
    assert transitions[0] == ("closed", "open") and transitions[-1] == ("half_open", "closed")
    turns = events(settings, "turn")
    assert len(turns) == 4 and all(t["chars"] > 0 for t in turns)
    assert [t["fallback"] for t in turns] == [True, True, True, False]


async def test_letta_mode_falls_back_to_direct_llm_with_cached_memory(
    stub: StubHandle, tmp_path: Path
) -> None:
    # a memory snapshot from an earlier run: the direct path still knows what Letta knew
    (tmp_path / MEMORY_SNAPSHOT_NAME).write_text(
        json.dumps({"fetched_at": 1.0, "blocks": [["human", "name: Bob"]]})
    )
    settings = make_settings(tmp_path, llm_url=stub.base_url, USE_HYBRID_STREAMING="false")
    async with text_agent(settings) as agent:
        assert agent.brain.mode == "letta"
        assert "name: Bob" in agent.runtime.memory.prompt_section()
        assert await agent.say("What is my name?") == "Your name is Bob."
        assert agent.turn.path == DIRECT and not agent.turn.fallback
        assert agent.turn.letta_tried and agent.turn.errors[0].startswith("letta:")
        await agent.runtime.sync.flush(0.2)
        (row,) = agent.runtime.outbox.all_turns()  # Letta never saw it: queued
        assert row["user_text"] == "What is my name?" and row["assistant_text"]
    (fb,) = [e for e in events(settings, "fallback") if e.get("from_path")]
    assert (fb["from_path"], fb["to_path"], fb["reason"]) == ("letta", "direct", "connection")


@pytest.mark.parametrize(("hybrid", "reason"), [("true", r.RATE_LIMITED), ("false", r.CONNECTION)])
async def test_both_paths_down_gives_a_validated_fallback(
    stub: StubHandle, tmp_path: Path, hybrid: str, reason: str
) -> None:
    # the sentence speaks to the failure of the mode's own path (LLM 429s, Letta refuses)
    settings = make_settings(tmp_path, llm_url=stub.base_url, USE_HYBRID_STREAMING=hybrid)
    async with text_agent(settings) as agent:
        stub.control(fault="429")
        reply = await agent.say("Hi")
        assert reply == r.fallback_sentence(reason)
        assert agent.turn.path == FALLBACK
    (turn,) = events(settings, "turn")
    assert turn["fallback"] is True and turn["fallback_reason"] == reason


async def test_health_probe_opens_letta_breaker_without_any_turn(
    stub: StubHandle, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url)
    async with text_agent(settings) as agent:
        await _wait_for(lambda: agent.runtime.breakers["letta"].state != r.CLOSED, 5.0)
        assert agent.runtime.breakers["llm"].state == r.CLOSED  # the stub is healthy
        # a hybrid turn is not slowed by the Letta outage
        assert await agent.say("Still fine") == "You said: Still fine."


async def test_fast_preresponse_never_delays_a_quicker_main_reply(
    stub: StubHandle, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url, FAST_PRERESPONSE="true")
    async with text_agent(settings) as agent:
        reply = await agent.say("Hello")
        assert "You said: Hello." in reply
        models = {req["body"]["model"] for req in chat_requests(stub)}
        assert "gpt-4o-mini" in models  # the filler model was asked
    (turn,) = events(settings, "turn")
    assert turn["chars"] > 0


async def test_interrupted_reply_is_recorded_and_its_words_kept(
    stub: StubHandle, tmp_path: Path
) -> None:
    from livekit.agents import llm

    settings = make_settings(tmp_path, llm_url=stub.base_url)
    stub.control(token_delay_ms=50)
    async with text_agent(settings) as agent:
        ctx = llm.ChatContext.empty()
        ctx.add_message(role="user", content="Tell me a long story please")
        reply = agent.brain.reply(ctx)
        first = await anext(reply)
        assert first.startswith("You")
        await reply.aclose()  # the user barged in
        turn = agent.brain.last_turn
        assert turn.interrupted and turn.path == HYBRID
        (row,) = agent.runtime.outbox.all_turns()
        assert row["assistant_text"] == first.strip()  # what was said reaches Letta
    (event,) = events(settings, "turn")
    assert event["interrupted"] is True and event["ttft_ms"] is not None


def test_render_blocks() -> None:
    assert render_blocks([]) == ""
    text = render_blocks([("persona", "kind"), ("human", "name: Ann")])
    assert "<persona>\nkind\n</persona>" in text and "<human>\nname: Ann\n</human>" in text


async def _wait_for(predicate, timeout: float) -> None:
    import asyncio
    import time

    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- token usage


def _token_samples(records: list[dict]) -> dict[str, float | None]:
    """livekit_llm_tokens as the agent's metrics count them from these event records."""
    from prometheus_client import CollectorRegistry

    from agent.metrics import AgentMetrics

    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    for record in records:
        metrics.observe_event(record)
    return {kind: registry.get_sample_value(
        "livekit_llm_tokens_total", {"model": "gpt-5-mini", "type": kind})
        for kind in ("input", "output")}


async def test_llm_stream_reports_its_tokens_in_events_and_metrics(
    stub: StubHandle, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url)
    async with text_agent(settings) as agent:
        assert await agent.say("Hello there") == "You said: Hello there."
        assert await agent.say("And again") == "You said: And again."
    bodies = [req["body"] for req in chat_requests(stub)]
    assert all(b["stream_options"] == {"include_usage": True} for b in bodies)
    turns = events(settings, "turn")
    # the stub counts ceil(1.3 * words) prompt tokens and one token a word of the reply
    prompt = [_prompt_tokens(b["messages"]) for b in bodies]
    assert [(t["prompt_tokens"], t["completion_tokens"]) for t in turns] == [
        (prompt[0], 4), (prompt[1], 4)]
    assert all(t["model"] == "gpt-5-mini" for t in turns)
    assert _token_samples(turns) == {"input": float(sum(prompt)), "output": 8.0}


def _prompt_tokens(messages: list[dict]) -> int:
    import math

    return max(1, math.ceil(sum(len(m["content"].split()) for m in messages) * 1.3))


async def test_an_endpoint_refusing_stream_options_still_answers(
    stub: StubHandle, tmp_path: Path
) -> None:
    stub.control(refuse_stream_options=True)
    settings = make_settings(tmp_path, llm_url=stub.base_url)
    async with text_agent(settings) as agent:
        assert await agent.say("Hello there") == "You said: Hello there."
        assert await agent.say("And again") == "You said: And again."
        assert agent.turn.path == HYBRID and not agent.turn.fallback
    asked = ["stream_options" in req["body"] for req in chat_requests(stub)]
    assert asked == [True, False, False]  # refused once, then not asked again
    turns = events(settings, "turn")
    assert [t["fallback"] for t in turns] == [False, False]
    assert all("prompt_tokens" not in t for t in turns)  # unknown, not 0
    assert events(settings, "fallback") == []
    assert _token_samples(turns) == {"input": None, "output": None}

