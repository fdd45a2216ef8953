"""Letta's health, defined once: where to ask (`GET /v1/health/`) and what counts as healthy.

The readiness probe of the letta service, the web console's /api/health and the tests all use
`check_health`. Healthy means 200 with a JSON document (Letta answers
`{"version": "0.16.8", "status": "ok"}`). The agent's own check goes through letta-client's
`AsyncLetta.health()`, which asks the same path with the agent's pooled client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from voicectl.services.probes import http_get, unreachable_reason

HEALTH_PATH = "/v1/health/"  # the trailing slash matters: without it Letta answers 307


def health_url(base_url: str) -> str:
    """The health endpoint of the Letta server at `base_url`."""
    return base_url.rstrip("/") + HEALTH_PATH


@dataclass(frozen=True)
class LettaHealth:
    """The verdict, one line saying why, and the health document when healthy."""

    ok: bool
    detail: str
    document: dict[str, Any] = field(default_factory=dict)


def check_health(base_url: str, api_key: str = "", timeout: float = 2.0) -> LettaHealth:
    """Fetch Letta's health document and judge it."""
    url = health_url(base_url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    try:
        status, body = http_get(url, timeout, headers)
    except OSError as exc:
        return LettaHealth(False, f"{url}: {unreachable_reason(exc)}")
    if status != 200:
        return LettaHealth(False, f"{url} answered {status}")
    try:
        data = json.loads(body)
    except ValueError:
        return LettaHealth(False, f"{url} answered 200 but not JSON")
    if not isinstance(data, dict):
        return LettaHealth(True, "letta ? healthy")
    return LettaHealth(True, f"letta {data.get('version', '?')} healthy", data)
