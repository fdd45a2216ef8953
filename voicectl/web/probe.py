"""Readiness probe of the web console (standard library only, for services/web.py)."""

from __future__ import annotations

import json

from voicectl.services.probes import ProbeResult, http_get, unreachable_reason
from voicectl.web import SERVICE_NAME


def probe_web(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> ProbeResult:
    """`GET /api/health?deps=0` answers 200 and names the console (no LiveKit/Letta calls)."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    url = f"http://{host}:{port}/api/health?deps=0"
    try:
        status, body = http_get(url, timeout)
    except OSError as exc:
        return ProbeResult(False, f"{url}: {unreachable_reason(exc)}")
    try:
        data = json.loads(body)
    except ValueError:
        return ProbeResult(False, f"{url} answered {status}, not JSON")
    if status != 200 or not isinstance(data, dict) or data.get("service") != SERVICE_NAME:
        return ProbeResult(False, f"{url} answered {status}: not the voicectl web console")
    return ProbeResult(True, f"web console on http://{host}:{port}/")
