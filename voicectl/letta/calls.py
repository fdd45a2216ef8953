"""Letta client calls for the CLI: whatever letta_client or httpx raise becomes one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from voicectl.errors import VoicectlError, first_line

T = TypeVar("T")


def letta_call(fn: Callable[[], T]) -> T:
    """Run a Letta client call; connection and API errors become one VoicectlError line."""
    try:
        return fn()
    except VoicectlError:
        raise
    except Exception as exc:  # letta_client and httpx raise many kinds
        raise VoicectlError(f"letta: {type(exc).__name__}: {first_line(exc)[:200]}") from None
