"""The agent's smaller parts: `voicectl chat`, the idle watchdog, providers, the outbox file."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.chat import chat_loop, run_chat
from agent.config import ConfigError
from agent.idle import IdleWatchdog
from agent.memory.sync import Outbox, SenderLease
from agent.providers import build_session_llm, build_stt, build_tts, load_vad
from tests.agent_support import events, make_settings, text_agent
from tests.fakes.openai_stub import StubHandle, start_openai_stub

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def stub() -> Iterator[StubHandle]:
    handle = start_openai_stub()
    try:
        yield handle
    finally:
        handle.stop()


# ----------------------------------------------------------------------------- chat


def test_run_chat_streams_replies_from_piped_lines(stub: StubHandle, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url)
    out = io.StringIO()
    code = run_chat(settings, io.StringIO("Hello there\n\n  \nHow are you\n/quit\nignored\n"), out)
    text = out.getvalue()
    assert code == 0
    assert "agent> You said: Hello there." in text and "agent> You said: How are you." in text
    assert text.count("[hybrid · ttft ") == 2 and "ignored" not in text
    assert "2 turn(s) queued for Letta" in text  # Letta is down in this test
    assert [t["source"] for t in events(settings, "turn")] == ["chat", "chat"]


async def test_chat_shows_fallback_and_its_reason(stub: StubHandle, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url)
    stub.control(fault="500", fault_count=3)
    out = io.StringIO()
    try:
        await chat_loop(settings, io.StringIO("Hi\n"), out)
    finally:
        stub.reset()
    assert "fallback server_error" in out.getvalue()


# ----------------------------------------------------------------------------- idle


async def test_idle_watchdog_says_goodbye_and_ends_the_session(
    stub: StubHandle, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url)
    async with text_agent(settings) as agent:
        ended = asyncio.Event()
        watchdog = IdleWatchdog(agent.session, 0.3, ended.set, goodbye="Bye for now, talk soon.")
        watchdog.start()
        await agent.say("Hello")  # activity postpones it
        await asyncio.wait_for(ended.wait(), 5)
        assert watchdog.fired
        said = [m.text_content for m in agent.session.history.items
                if getattr(m, "role", None) == "assistant"]
        assert said[-1] == "Bye for now, talk soon."
        await watchdog.stop()


# ----------------------------------------------------------------------------- providers


def test_providers_are_built_from_config(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, llm_url="http://127.0.0.1:9/v1",
                             DEEPGRAM_API_KEY="dg", OPENAI_TTS_VOICE="alloy", TTS_MODEL="tts-1")
    stt = build_stt(settings)
    assert type(stt).__module__.startswith("livekit.plugins.deepgram")
    tts = build_tts(settings)
    assert type(tts).__module__.startswith("livekit.plugins.openai")
    assert tts._opts.voice == "alloy" and tts._opts.model == "tts-1"
    assert build_session_llm(settings).model == "gpt-5-mini"

    local = make_settings(tmp_path, llm_url="http://127.0.0.1:9/v1", STT_PROVIDER="openai",
                          STT_BASE_URL="http://127.0.0.1:7/v1", TTS_BASE_URL="http://127.0.0.1:8/v1")
    assert type(build_stt(local)).__module__.startswith("livekit.plugins.openai")
    assert "127.0.0.1:8" in str(build_tts(local)._client.base_url)

    with pytest.raises(ConfigError):
        build_stt(make_settings(tmp_path, llm_url="http://x/v1", STT_PROVIDER="nope"))
    with pytest.raises(ConfigError):
        build_tts(make_settings(tmp_path, llm_url="http://x/v1", TTS_PROVIDER="nope"))


def test_silero_vad_loads_offline() -> None:
    assert load_vad() is not None


# ----------------------------------------------------------------------------- outbox


def test_outbox_is_ordered_idempotent_and_durable(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    a = box.enqueue("one", "1", otid="t-a")
    b = box.enqueue("two", "2")
    assert box.enqueue("one again", "x", otid="t-a") == a  # same otid: no second row
    box.mark_attempt(box.oldest_pending().id)
    box.close()

    box = Outbox(path)  # a restart keeps everything, attempts included
    first = box.oldest_pending()
    assert (first.otid, first.user_text, first.attempts) == (a, "one", 1)
    box.mark_delivered(first.id)
    assert box.oldest_pending().otid == b and box.pending_count() == 1
    box.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 2


def test_one_sender_lease_per_state_dir(tmp_path: Path) -> None:
    first, second = SenderLease(tmp_path / "x.lock"), SenderLease(tmp_path / "x.lock")
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


def test_job_metadata_chooses_the_letta_agent():
    """The web console dispatches with {"letta_agent_id": ...}; other metadata changes nothing."""
    from agent import worker

    base = worker.settings.letta_agent_id
    assert worker.settings_for_job('{"letta_agent_id": "agent-123"}').letta_agent_id == "agent-123"
    assert worker.settings_for_job("").letta_agent_id == base
    assert worker.settings_for_job("not json").letta_agent_id == base
    assert worker.settings_for_job('["agent-1"]').letta_agent_id == base
    assert worker.settings_for_job('{"letta_agent_id": 5}').letta_agent_id == base
