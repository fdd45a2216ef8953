"""`voicectl chat`: talk to the agent's brain in the terminal, with no LiveKit.

A text-only AgentSession runs the same Brain as the voice worker (same paths, breakers,
fallbacks and memory outbox). Each reply streams as it is generated, followed by a status line
with its path and time to first token. Reads lines from any text stream, so it can be piped:

    printf 'hello\\nwhat is my name?\\n' | voicectl chat
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Protocol

from agent.config import Settings

if TYPE_CHECKING:  # pragma: no cover
    from livekit.agents import AgentSession

    from agent.brain.brain import Brain
    from agent.brain.runtime import AgentRuntime

QUIT_WORDS = {"/quit", "/exit", "/bye", ":q"}
FLUSH_ON_EXIT_SECONDS = 3.0


class ChatView(Protocol):
    """Where the conversation is shown (voicectl.render.chat.ChatTranscript)."""

    def opened(self, mode: str) -> None: ...

    def asked(self, text: str, echo: bool) -> None: ...

    def reply_text(self, text: str) -> None: ...

    def reply_end(self, path: str | None, ttft_ms: float | None, fallback: bool,
                  fallback_reason: str | None) -> None: ...

    def reply_end_unmeasured(self) -> None: ...

    def queued(self, pending: int) -> None: ...


async def start_text_session(
    runtime: AgentRuntime, *, mode: str | None = None, on_text: Callable[[str], None] | None = None
) -> tuple[AgentSession, Brain]:
    """A started text-only AgentSession running a Brain (no room, no audio, no VAD)."""
    from livekit.agents import AgentSession
    from livekit.agents.voice import io

    from agent.brain.brain import Brain
    from agent.providers import build_session_llm
    from agent.voice_agent import VoiceAgent

    class _Sink(io.TextOutput):
        def __init__(self) -> None:
            super().__init__(label="voicectl-chat", next_in_chain=None)

        async def capture_text(self, text: str) -> None:
            if on_text is not None:
                on_text(text)

        def flush(self) -> None:
            pass

    brain = Brain(runtime, mode=mode)
    session: AgentSession = AgentSession(
        llm=build_session_llm(runtime.settings),
        vad=None,
        turn_handling={"turn_detection": "manual"},
        user_away_timeout=None,
    )
    if on_text is not None:
        session.output.transcription = _Sink()
    await session.start(VoiceAgent(brain))
    return session, brain


async def chat_loop(
    settings: Settings,
    input_stream: IO[str],
    view: ChatView,
    *,
    mode: str | None = None,
    runtime: AgentRuntime | None = None,
) -> None:
    """The conversation loop (async): one reply per non-empty input line."""
    from agent.brain.runtime import AgentRuntime

    own_runtime = runtime is None
    rt = runtime or AgentRuntime(settings, source="chat")
    rt.start()
    session, brain = await start_text_session(rt, mode=mode, on_text=view.reply_text)
    view.opened(brain.mode)
    try:
        while True:
            line = await asyncio.to_thread(input_stream.readline)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text.lower() in QUIT_WORDS:
                break
            view.asked(text, echo=not _is_tty(input_stream))
            await session.run(user_input=text)
            turn = brain.last_turn
            if turn is not None:
                view.reply_end(turn.path, turn.ms(turn.first_at), bool(turn.fallback),
                               turn.fallback_reason)
            else:
                view.reply_end_unmeasured()
    finally:
        await session.aclose()
        if own_runtime:
            await rt.aclose(flush_timeout=FLUSH_ON_EXIT_SECONDS)
            pending = rt.pending_at_close
            if pending:
                view.queued(pending)


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def run_chat(
    settings: Settings,
    input_stream: IO[str],
    view: ChatView,
    *,
    mode: str | None = None,
) -> None:
    """Run `voicectl chat` to completion: lines from `input_stream`, the conversation shown
    on `view`; `mode` ("hybrid" or "letta") overrides USE_HYBRID_STREAMING."""
    asyncio.run(chat_loop(settings, input_stream, view, mode=mode))
