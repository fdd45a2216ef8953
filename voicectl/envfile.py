"""Edit a .env file in place, keeping comments, order and other keys (python-dotenv)."""

from __future__ import annotations

import os
from pathlib import Path

from agent.config import read_env_file


def set_value(path: Path, key: str, value: str) -> bool:
    """Set KEY=value; a new file is created with mode 0600. Returns True when it changed."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    elif read_env_file(path).get(key) == value:
        return False
    from dotenv import set_key

    set_key(str(path), key, value, quote_mode="never")
    return True


def get_value(path: Path, key: str) -> str | None:
    return read_env_file(path).get(key)
