"""`voicectl chat`: talk to the agent's brain in the terminal, with no LiveKit.

A text-only AgentSession runs the same Brain as the voice worker (same paths, breakers,
fallbacks and memory outbox). Each reply streams as it is generated, followed by a status line
with its path and time to first token. Reads lines from any text stream, so it can be piped:

    printf 'hello\\nwhat is my name?\\n' | voicectl chat
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from agent.config import Settings

if TYPE_CHECKING:  # pragma: no cover
    from livekit.agents import AgentSession

    from agent.brain.brain import Brain
    from agent.brain.runtime import AgentRuntime

QUIT_WORDS = {"/quit", "/exit", "/bye", ":q"}
FLUSH_ON_EXIT_SECONDS = 3.0


def _writer(output: Any) -> tuple[Callable[[str], None], Callable[[], None]]:
    """write/flush callables for a text stream or a rich Console."""
    if hasattr(output, "write"):
        return output.write, getattr(output, "flush", lambda: None)
    if hasattr(output, "print"):
        def write(text: str) -> None:
            output.print(text, end="", markup=False, highlight=False, soft_wrap=True)

        return write, lambda: None
    raise TypeError("output must be a text stream or a rich Console")


async def start_text_session(
    runtime: AgentRuntime, *, mode: str | None = None, on_text: Callable[[str], None] | None = None
) -> tuple[AgentSession, Brain]:
    """A started text-only AgentSession running a Brain (no room, no audio, no VAD)."""
    from livekit.agents import AgentSession
    from livekit.agents.voice import io

    from agent.brain.brain import Brain, VoiceAgent
    from agent.providers import build_session_llm

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
    output: Any,
    *,
    mode: str | None = None,
    runtime: AgentRuntime | None = None,
) -> int:
    """The conversation loop (async): one reply per non-empty input line."""
    from agent.brain.runtime import AgentRuntime

    write, flush = _writer(output)
    own_runtime = runtime is None
    rt = runtime or AgentRuntime(settings, source="chat")
    rt.start()

    def on_text(text: str) -> None:
        write(text)
        flush()

    session, brain = await start_text_session(rt, mode=mode, on_text=on_text)
    write(f"voicectl chat · mode {brain.mode} · /quit to leave\n")
    flush()
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
            write("you> " + text + "\n" if not _is_tty(input_stream) else "")
            write("agent> ")
            flush()
            await session.run(user_input=text)
            turn = brain.last_turn
            if turn is not None:
                ttft = turn.ms(turn.first_at)
                status = f"[{turn.path} · ttft {ttft:.0f} ms" if ttft is not None else "[—"
                if turn.fallback:
                    status += f" · fallback {turn.fallback_reason}"
                write(f"\n  {status}]\n")
            else:
                write("\n")
            flush()
    finally:
        await session.aclose()
        if own_runtime:
            await rt.aclose(flush_timeout=FLUSH_ON_EXIT_SECONDS)
            pending = rt.pending_at_close
            if pending:
                write(f"{pending} turn(s) queued for Letta; they will be delivered later.\n")
                flush()
    return 0


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def run_chat(
    settings: Settings,
    input_stream: IO[str] | None = None,
    output: Any = None,
    *,
    mode: str | None = None,
) -> int:
    """Run `voicectl chat` to completion; returns the exit code.

    `input_stream` defaults to stdin, `output` to stdout (a rich Console works too); `mode`
    ("hybrid" or "letta") overrides USE_HYBRID_STREAMING.
    """
    return asyncio.run(
        chat_loop(settings, input_stream or sys.stdin, output or sys.stdout, mode=mode)
    )
