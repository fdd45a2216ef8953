"""Ids shaped like the server's guids, and its millisecond clock."""

from __future__ import annotations

import secrets
import time

_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def new_id(prefix: str) -> str:
    """A prefix (``RM_``, ``PA_``, ``TR_``, ``AD_``, ``AJ_``, ``AW_``) and 12 base57 characters."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def now_ms() -> int:
    return int(time.time() * 1000)
