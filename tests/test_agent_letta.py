"""The agent against a REAL Letta 0.16.8 server (fixture `managed_letta`, tests/conftest.py).

- hybrid turns carry Letta's core memory and reach Letta through the outbox, once each;
- letta mode streams from the Letta agent (with an optional filler first);
- Letta killed mid-conversation: every turn is answered, the breaker opens, the outbox keeps
  the turns, and once Letta is back every turn arrives in order, none twice;
- a restarted agent delivers the outbox it inherited; a turn whose acknowledgement was lost is
  recognised by its otid and not sent again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from agent import resilience as r
from agent.brain.turn import HYBRID, LETTA
from agent.clients.letta import LettaAccess
from tests.fakes.openai_stub import StubHandle
from tests.support.agent import events, make_settings, text_agent
from tests.support.letta import ManagedLetta

pytestmark = pytest.mark.timeout(600)


def letta_settings(home: Path, letta: ManagedLetta, **env: str):
    """Settings for a fresh Letta agent of our own on the managed server."""
    return make_settings(
        home,
        llm_url=letta.stub.base_url,
        letta_url=letta.base_url,
        LETTA_AGENT_NAME=f"voice-test-{uuid.uuid4().hex[:8]}",
        REQUEST_TIMEOUT_SECONDS="15", TURN_DEADLINE_SECONDS="40",  # real Letta, busy machine
        **env,
    )


async def user_otids(access: LettaAccess, limit: int = 300) -> list[str]:
    """The otids of the user messages in the agent's history, oldest first."""
    agent_id = await access.resolve_agent_id(30)
    page = await access.client.agents.messages.list(agent_id, limit=limit, order="desc")
    msgs = [m for m in page.items if getattr(m, "message_type", "") == "user_message"]
    msgs.sort(key=lambda m: m.date)
    return [m.otid for m in msgs if m.otid]


async def wait_until(predicate, timeout: float, interval: float = 0.1) -> None:
    end = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def test_hybrid_turns_use_letta_memory_and_reach_letta_once(
    managed_letta: ManagedLetta, tmp_path: Path
) -> None:
    settings = letta_settings(tmp_path, managed_letta)
    async with text_agent(settings) as agent:
        access = agent.runtime.letta
        agent_id = await access.resolve_agent_id(30)
        await access.client.agents.blocks.update(
            "human", agent_id=agent_id, value="name: Ann\nlikes: green tea"
        )
        assert await agent.runtime.memory.refresh()
        assert await agent.say("What is my name?") == "Your name is Ann."
        assert agent.turn.path == HYBRID
        assert await agent.say("I walked the dog today") == "You said: I walked the dog today."
        assert await agent.runtime.sync.flush(60, stop_on_failure=False)
        otids = [e["turn"] for e in events(settings, "turn")]
        assert await user_otids(access) == otids  # in order, exactly once each
    syncs = events(settings, "memory_sync")
    assert [s["ok"] for s in syncs] == [True, True] and syncs[-1]["pending"] == 0


async def test_letta_mode_streams_from_the_letta_agent_with_a_filler_first(
    managed_letta: ManagedLetta, openai_stub: StubHandle, tmp_path: Path
) -> None:
    settings = letta_settings(tmp_path, managed_letta, USE_HYBRID_STREAMING="false")
    async with text_agent(settings) as agent:
        await agent.runtime.letta.resolve_agent_id(60)  # created on first use (done at start)
        assert await agent.say("Good morning") == "You said: Good morning."
        assert agent.turn.path == LETTA and not agent.turn.fallback
        await agent.runtime.sync.flush(1)
        assert agent.runtime.outbox.all_turns() == []  # Letta saw the turn itself
        assert await user_otids(agent.runtime.letta) == [agent.turn.otid]

    # the filler comes from a small model on its own endpoint, Letta is slower
    settings = make_settings(
        tmp_path / "filler", llm_url=openai_stub.base_url, letta_url=managed_letta.base_url,
        LETTA_AGENT_NAME=settings.letta_agent_name, USE_HYBRID_STREAMING="false",
        FAST_PRERESPONSE="true", REQUEST_TIMEOUT_SECONDS="15", TURN_DEADLINE_SECONDS="40",
    )
    openai_stub.control(reply="One moment.")
    async with text_agent(settings) as agent:
        reply = await agent.say("What's the weather")
        assert agent.turn.path == LETTA
        assert reply == "One moment. You said: What's the weather." and agent.turn.preresponse
    (turn,) = events(settings, "turn")
    assert turn["preresponse"] is True and turn["ttft_ms"] <= turn["main_ttft_ms"]


async def test_letta_killed_mid_conversation_loses_nothing_and_duplicates_nothing(
    managed_letta: ManagedLetta, tmp_path: Path
) -> None:
    settings = letta_settings(tmp_path, managed_letta)
    async with text_agent(settings) as agent:
        rt = agent.runtime
        access = rt.letta
        await access.resolve_agent_id(30)
        for text in ("First thing", "Second thing"):
            assert await agent.say(text) == f"You said: {text}."
        assert await rt.sync.flush(60, stop_on_failure=False)

        managed_letta.stop_letta()
        try:
            during = ["Third thing", "Fourth thing", "Fifth thing", "Sixth thing"]
            for text in during:
                reply = await agent.say(text)
                assert reply == f"You said: {text}."  # the hybrid path never waits on Letta
                assert agent.turn.path == HYBRID
            await wait_until(lambda: _is_open(rt.breakers["letta"]), 10)
            await asyncio.sleep(0.3)
            pending = rt.outbox.pending_count()
            assert pending == len(during)  # kept on disk, nothing lost
        finally:
            managed_letta.start_letta()

        assert await rt.sync.flush(90, stop_on_failure=False)
        otids = [e["turn"] for e in events(settings, "turn")]
        assert len(otids) == 6
        history = await user_otids(access)
        assert history == otids  # every turn, in order
        assert all(n == 1 for n in Counter(history).values())  # none twice
    breaker = [(c["from"], c["to"]) for c in events(settings, "circuit")
               if c["dependency"] == "letta"]
    assert ("closed", "open") in breaker and breaker[-1][1] == "closed"
    failed = [s for s in events(settings, "memory_sync") if not s["ok"]]
    assert failed and all(s["pending"] >= 1 for s in failed)


async def test_restarted_agent_delivers_its_outbox_once(
    managed_letta: ManagedLetta, tmp_path: Path
) -> None:
    settings = letta_settings(tmp_path, managed_letta)
    access = LettaAccess(settings)
    await access.resolve_agent_id(30)

    # a previous run whose Letta was unreachable: its turns stayed in the outbox
    offline = make_settings(tmp_path, llm_url=managed_letta.stub.base_url,
                            LETTA_AGENT_NAME=settings.letta_agent_name)
    async with text_agent(offline) as agent:
        for text in ("Remember the milk", "And the eggs"):
            assert await agent.say(text) == f"You said: {text}."
        await agent.runtime.sync.flush(0.5)
    queued = [e["turn"] for e in events(offline, "turn")]

    # a turn Letta received although the sender never saw the acknowledgement
    lost_ack = f"turn-{uuid.uuid4()}"
    await access.send_turn("Also bread", "Bread, noted.", otid=lost_ack, timeout=60)

    async with text_agent(settings) as agent:
        agent.runtime.outbox.enqueue("Also bread", "Bread, noted.", otid=lost_ack,
                                     maybe_sent=True)
        agent.runtime.sync.notify()
        assert await agent.runtime.sync.flush(60, stop_on_failure=False)
        rows = agent.runtime.outbox.all_turns()
        assert [row["otid"] for row in rows] == [*queued, lost_ack]
        assert all(row["delivered"] for row in rows)
    history = await user_otids(access)
    assert history == [lost_ack, *queued]  # each exactly once, in order
    dedup = [s for s in events(settings, "memory_sync") if s.get("deduplicated")]
    assert [s["otid"] for s in dedup] == [lost_ack]
    await access.client.close()


async def _is_open(breaker: r.CircuitBreaker) -> bool:
    return breaker.state != r.CLOSED
