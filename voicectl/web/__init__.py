"""The browser console: a static page (livekit-client, served locally) and its small JSON API.

`python -m voicectl.web` runs it (aiohttp) on 127.0.0.1:WEB_PORT. This package's `__init__`
and `probe` stay cheap to import: the server's modules (aiohttp, livekit.api, letta_client)
load only in the server process.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_HOST = "127.0.0.1"
SERVICE_NAME = "voicectl-web"
