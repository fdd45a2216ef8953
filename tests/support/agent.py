"""Helpers for the agent tests: settings with small tunables, a text-only agent, event reads."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import Settings
from agent.config.loading import load_settings
from agent.events import read_events
from tests.support.ports import dead_url

#: Reliability tunables small enough for fast tests (the defaults are 30 s, 2 s, 10 s...).
FAST_TUNABLES = {
    "CIRCUIT_FAILURE_THRESHOLD": "3",
    "CIRCUIT_RESET_SECONDS": "0.5",
    "RETRY_ATTEMPTS": "2",
    "RETRY_BASE_DELAY_SECONDS": "0.02",
    "RETRY_JITTER": "0.2",
    "REQUEST_TIMEOUT_SECONDS": "1.0",
    "TURN_DEADLINE_SECONDS": "5.0",
    "HEALTH_PROBE_INTERVAL_SECONDS": "0.2",
    "MEMORY_REFRESH_SECONDS": "0.5",
    "MEMORY_SYNC_BASE_DELAY_SECONDS": "0.05",
    "MEMORY_SYNC_MAX_DELAY_SECONDS": "0.5",
    "MEMORY_SYNC_TIMEOUT_SECONDS": "30",
    "PRERESPONSE_TIMEOUT_SECONDS": "5.0",
}


def make_settings(home: Path, *, llm_url: str, letta_url: str | None = None,
                  **env: str) -> Settings:
    """Settings for a test: state in `home`, the LLM at `llm_url`, Letta at `letta_url`."""
    environ = {
        "VOICECTL_HOME": str(home),
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": llm_url,
        "LETTA_SERVER_URL": letta_url or dead_url(),
        **FAST_TUNABLES,
        **env,
    }
    return load_settings(env_file=home / "absent.env", environ=environ)


def events(settings: Settings, name: str | None = None) -> list[dict[str, Any]]:
    """Records of the test's event log (optionally of one event kind)."""
    return [e for e in read_events(settings.events_path) if name is None or e["event"] == name]


@dataclass
class TextAgent:
    """A runtime with a started text-only AgentSession running a Brain."""

    runtime: Any
    session: Any
    brain: Any

    async def say(self, text: str) -> str:
        """One full user turn; returns the assistant's reply text."""
        result = await self.session.run(user_input=text)
        replies = [
            e.item.text_content for e in result.events
            if getattr(e, "type", None) == "message" and e.item.role == "assistant"
        ]
        assert replies, f"no assistant message for {text!r}: {result.events}"
        return "".join(r or "" for r in replies)

    @property
    def turn(self) -> Any:
        return self.brain.last_turn


@contextlib.asynccontextmanager
async def text_agent(
    settings: Settings, *, mode: str | None = None, sync: bool = True, start: bool = True
) -> AsyncIterator[TextAgent]:
    """A TextAgent over a fresh AgentRuntime; everything is closed on exit."""
    from agent.brain.runtime import AgentRuntime
    from agent.chat import start_text_session

    runtime = AgentRuntime(settings, sync_enabled=sync, source="test")
    if start:
        runtime.start()
    session, brain = await start_text_session(runtime, mode=mode)
    try:
        yield TextAgent(runtime, session, brain)
    finally:
        await session.aclose()
        await runtime.aclose()
