"""`voicectl chat` as a transcript: the reply streams as it is generated, then a status line."""

from __future__ import annotations

from typing import IO


class ChatTranscript:
    """Writes a chat to a text stream; agent.chat calls it as the conversation goes."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def opened(self, mode: str) -> None:
        self._write(f"voicectl chat · mode {mode} · /quit to leave\n")

    def asked(self, text: str, echo: bool) -> None:
        """The user's line (echoed when it did not come from a terminal), then the reply's
        prompt."""
        self.out.write("you> " + text + "\n" if echo else "")
        self._write("agent> ")

    def reply_text(self, text: str) -> None:
        self._write(text)

    def reply_end(self, path: str | None, ttft_ms: float | None, fallback: bool,
                  fallback_reason: str | None) -> None:
        """The reply's path and time to first token (and its fallback, if any)."""
        status = f"[{path} · ttft {ttft_ms:.0f} ms" if ttft_ms is not None else "[—"
        if fallback:
            status += f" · fallback {fallback_reason}"
        self._write(f"\n  {status}]\n")

    def reply_end_unmeasured(self) -> None:
        self._write("\n")

    def queued(self, pending: int) -> None:
        """Turns not yet delivered to Letta when the chat ended."""
        self._write(f"{pending} turn(s) queued for Letta; they will be delivered later.\n")
