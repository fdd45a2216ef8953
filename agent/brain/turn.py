"""What one reply did: the path that served it, its timings, text and failures.

The brain fills a `Turn` while it replies; the runtime hands it to observers and the `turn`
event reports it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

# Path names (the `path` of `turn` events).
HYBRID = "hybrid"
LETTA = "letta"
DIRECT = "direct"
FALLBACK = "fallback"


@dataclass
class Turn:
    """What happened in one reply."""

    mode: str
    user_text: str
    otid: str = field(default_factory=lambda: f"turn-{uuid.uuid4()}")
    started: float = field(default_factory=time.perf_counter)
    path: str = FALLBACK
    first_at: float | None = None
    main_first_at: float | None = None
    text: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    fallback: bool = False
    fallback_reason: str | None = None
    preresponse: bool = False
    letta_tried: bool = False
    interrupted: bool = False
    usage: dict[str, int] | None = None  # tokens the LLM stream reported, when it did

    def ms(self, at: float | None) -> float | None:
        return None if at is None else round((at - self.started) * 1000, 2)


__all__ = ["DIRECT", "FALLBACK", "HYBRID", "LETTA", "Turn"]
