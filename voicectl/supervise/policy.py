"""When a keeper restarts its service, and when it gives up: a pure decision, no clock, no I/O.

A run is judged by how long it lived, not by its exit code (the LiveKit worker exits 0 when it
gives up on the server). Each fast crash in a row doubles the delay, up to `max_delay`; a slow
crash starts the count again; `max_fast_crashes` in a row end the restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import Settings

MAX_DELAY_SECONDS = 60.0


@dataclass(frozen=True)
class Decision:
    """What to do after a run ended: restart after `delay` seconds, or give up (delay None).

    `crashes_in_row` is the count to pass to the next decision; `reason` is the text the
    keeper records and prints.
    """

    crashes_in_row: int
    delay: float | None
    reason: str

    @property
    def give_up(self) -> bool:
        return self.delay is None


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff and give-up rules of a keeper."""

    backoff_seconds: float
    fast_crash_seconds: float
    max_fast_crashes: int
    max_delay: float = MAX_DELAY_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> RestartPolicy:
        return cls(
            backoff_seconds=settings.restart_backoff_seconds,
            fast_crash_seconds=settings.restart_fast_crash_seconds,
            max_fast_crashes=settings.restart_max_fast_crashes,
        )

    def after_exit(self, lived: float, exit_code: int, crashes_in_row: int) -> Decision:
        """The decision after a run that lived `lived` seconds and exited with `exit_code`,
        `crashes_in_row` being the count the previous decision returned (0 at first)."""
        crashes = crashes_in_row + 1 if lived < self.fast_crash_seconds else 1
        if crashes >= self.max_fast_crashes:
            return Decision(crashes, None, (
                f"crashed {crashes} times in a row, each within "
                f"{self.fast_crash_seconds:g}s of starting (last exit code {exit_code}); "
                "gave up restarting"
            ))
        delay = min(self.backoff_seconds * 2 ** (crashes - 1), self.max_delay)
        return Decision(crashes, delay, f"exited with code {exit_code}; restarting in {delay:.1f}s")
