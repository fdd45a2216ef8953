"""Readiness probes: small HTTP checks with short timeouts, standard library only."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


def http_get(url: str, timeout: float = 1.0, headers: dict[str, str] | None = None
             ) -> tuple[int, bytes]:
    """GET a URL; returns (status, body). Raises OSError on connection problems."""
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    conn_cls = http.client.HTTPSConnection if secure else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(65536)
    except (http.client.HTTPException, ValueError) as exc:
        raise OSError(str(exc) or type(exc).__name__) from exc
    finally:
        conn.close()


def unreachable_reason(exc: OSError) -> str:
    text = str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError) or "timed out" in text:
        return "timed out"
    return text or type(exc).__name__


def probe_text(url: str, expect: str, timeout: float = 1.0) -> ProbeResult:
    """200 with the expected body (LiveKit answers `OK` on /)."""
    try:
        status, body = http_get(url, timeout)
    except OSError as exc:
        return ProbeResult(False, f"{url}: {unreachable_reason(exc)}")
    text = body.decode(errors="replace").strip()
    if status == 200 and text == expect:
        return ProbeResult(True, f"{url} answered {expect}")
    return ProbeResult(False, f"{url} answered {status} {text[:80]!r}")


def probe_worker(port: int, agent_name: str, timeout: float = 1.0) -> ProbeResult:
    """The worker health server: 200 on `/`, and `/worker` names our agent."""
    base = f"http://127.0.0.1:{port}"
    try:
        status, body = http_get(base + "/", timeout)
        if status != 200:
            return ProbeResult(False, f"worker health {status}: {body.decode(errors='replace')}")
        status, body = http_get(base + "/worker", timeout)
    except OSError as exc:
        return ProbeResult(False, f"{base}: {unreachable_reason(exc)}")
    try:
        name = json.loads(body).get("agent_name", "")
    except (ValueError, AttributeError):
        return ProbeResult(False, f"{base}/worker answered {status}, not JSON")
    if name != agent_name:
        return ProbeResult(False, f"worker on :{port} is agent {name!r}, not {agent_name!r}")
    return ProbeResult(True, f"worker {agent_name!r} on :{port}")
