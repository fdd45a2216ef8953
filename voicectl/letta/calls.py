"""Letta client calls for the CLI: whatever letta_client or httpx raise becomes one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from voicectl.errors import VoicectlError

T = TypeVar("T")


def letta_call(fn: Callable[[], T]) -> T:
    """Run a Letta client call; connection and API errors become one VoicectlError line."""
    try:
        return fn()
    except VoicectlError:
        raise
    except Exception as exc:  # letta_client and httpx raise many kinds
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VoicectlError(f"letta: {type(exc).__name__}: {detail[:200]}") from None
