"""`VOICECTL_<NAME>_CMD`: the setting that replaces a service's command.

A module of its own, below the service specs, because the LiveKit choice (livekit/choice.py)
reads it too and the specs import that choice.
"""

from __future__ import annotations

import shlex

from agent.config import Settings
from voicectl.errors import UsageError


def command_override(settings: Settings, name: str) -> list[str] | None:
    """The `VOICECTL_<NAME>_CMD` override, split as a shell splits words."""
    raw = getattr(settings, f"voicectl_{name}_cmd", "")
    if not raw.strip():
        return None
    try:
        argv = shlex.split(raw)
    except ValueError as exc:
        raise UsageError(f"VOICECTL_{name.upper()}_CMD cannot be split: {exc}") from None
    return argv
