"""The agent's smaller parts against the stub: `voicectl chat`, the idle watchdog; and the
VAD model (the parts that need neither: tests/unit/test_agent_parts.py)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from agent.chat import chat_loop, run_chat
from agent.idle import IdleWatchdog
from agent.providers import load_vad
from tests.fakes.openai_stub import StubHandle
from tests.support.agent import events, make_settings, text_agent
from voicectl.render.chat import ChatTranscript

pytestmark = pytest.mark.timeout(60)


# ----------------------------------------------------------------------------- chat


def test_run_chat_streams_replies_from_piped_lines(stub: StubHandle, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url)
    out = io.StringIO()
    run_chat(settings, io.StringIO("Hello there\n\n  \nHow are you\n/quit\nignored\n"),
             ChatTranscript(out))
    text = out.getvalue()
    assert "agent> You said: Hello there." in text and "agent> You said: How are you." in text
    assert text.count("[hybrid · ttft ") == 2 and "ignored" not in text
    assert "2 turn(s) queued for Letta" in text  # Letta is down in this test
    assert [t["source"] for t in events(settings, "turn")] == ["chat", "chat"]


async def test_chat_shows_fallback_and_its_reason(stub: StubHandle, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, llm_url=stub.base_url)
    stub.control(fault="500", fault_count=3)
    out = io.StringIO()
    try:
        await chat_loop(settings, io.StringIO("Hi\n"), ChatTranscript(out))
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


# ----------------------------------------------------------------------------- VAD model


def test_silero_vad_loads_offline() -> None:
    assert load_vad() is not None

