"""The console's aiohttp application: static page, JSON API, request policy.

API (JSON in and out; errors are `{"error": "..."}`):

* `GET /api/health` → `{status, service, livekit: ok|err, letta: ok|err, details}`;
  `?deps=0` skips the LiveKit and Letta checks (the readiness probe).
* `GET /api/agents` → `{agents: [{id, name, model, created_at}], default_agent_id}`.
* `POST /api/token` `{room, identity}` → `{token, url, room, identity, expires_at}`.
* `POST /api/dispatch-agent` `{room, letta_agent_id}` → dispatches AGENT_NAME into the room
  with job metadata `{"letta_agent_id": ...}` → `{dispatch_id, room, agent_name, metadata,
  dispatched_at}`.
* `GET /api/dispatch-why?room=R&since=T` → why no agent came after the dispatch at T:
  `{room, agent_name, cause: declined|no_worker|full|start_failed|unknown, why, worker}`
  (voicectl.livekit.dispatch_why; the page asks when no agent joined in time).

Statuses: 400 bad input, 403 foreign Host or Origin, 404 unknown Letta agent, 413 body too
large, 415 not JSON, 502 LiveKit or Letta failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from agent.config import Settings
from voicectl.errors import VoicectlError, first_line
from voicectl.letta import agents as letta_agents
from voicectl.letta.health import check_health
from voicectl.livekit import api as livekit_ops
from voicectl.web import SERVICE_NAME, STATIC_DIR
from voicectl.web.guard import (
    MAX_BODY_BYTES,
    BadRequest,
    dispatch_request,
    host_allowed,
    origin_allowed,
    token_request,
    why_request,
)

log = logging.getLogger("voicectl.web")

TOKEN_TTL = timedelta(hours=1)
LETTA_TIMEOUT = 10.0
LIVEKIT_TIMEOUT = 10.0
HEALTH_TIMEOUT = 3.0
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
BIND_HOST: web.AppKey[str] = web.AppKey("bind_host", str)
LKAPI: web.AppKey[Any] = web.AppKey("lkapi", object)
CSP: web.AppKey[str] = web.AppKey("csp", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def content_security_policy(livekit_url: str) -> str:
    """Only our own files run; connections go to us and to the LiveKit server."""
    parts = urlsplit(livekit_url)
    secure = parts.scheme in ("wss", "https")
    lk = f"{'wss' if secure else 'ws'}://{parts.netloc} {'https' if secure else 'http'}://" \
         f"{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"media-src 'self' blob: mediastream:; connect-src 'self' {lk}; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse foreign Host and Origin headers; turn API failures into JSON errors."""
    host = request.headers.get("Host", "")
    if not host_allowed(host, request.app[BIND_HOST]):
        return error(403, f"host {host[:100]!r} not allowed: use http://127.0.0.1 or localhost")
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin, host):
        return error(403, f"cross-origin request from {origin[:100]!r} refused")
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except BadRequest as exc:
        return error(exc.status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error (see the web service log)")


async def read_json(request: web.Request) -> Any:
    """The JSON body of a POST: application/json, at most MAX_BODY_BYTES."""
    if request.content_type != "application/json":
        raise BadRequest("the body must be JSON (Content-Type: application/json)", 415)
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes", 413) from None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def health(request: web.Request) -> web.Response:
    """The console is up; with deps (the default) also whether LiveKit and Letta answer."""
    settings = request.app[SETTINGS]
    body: dict[str, Any] = {"status": "ok", "service": SERVICE_NAME}
    if request.query.get("deps") == "0":
        return web.json_response(body)

    async def livekit() -> tuple[bool, str]:
        try:
            rooms = await asyncio.wait_for(
                livekit_ops.list_rooms_async(settings, request.app[LKAPI]), HEALTH_TIMEOUT
            )
        except TimeoutError:
            return False, f"{settings.livekit_http_url} did not answer in {HEALTH_TIMEOUT:g}s"
        except VoicectlError as exc:
            return False, str(exc)
        return True, f"{settings.livekit_http_url}: {len(rooms)} room(s)"

    async def letta() -> tuple[bool, str]:
        result = await asyncio.to_thread(
            check_health, settings.letta_server_url, settings.letta_api_key, HEALTH_TIMEOUT
        )
        return result.ok, result.detail

    (lk_ok, lk_detail), (letta_ok, letta_detail) = await asyncio.gather(livekit(), letta())
    body.update(
        status="ok" if lk_ok and letta_ok else "degraded",
        livekit="ok" if lk_ok else "err",
        letta="ok" if letta_ok else "err",
        details={"livekit": lk_detail, "letta": letta_detail},
        agent_name=settings.agent_name,
    )
    return web.json_response(body)


async def agents(request: web.Request) -> web.Response:
    """The Letta agents a session can use (sleep-time companions left out)."""
    settings = request.app[SETTINGS]
    try:
        found = await asyncio.to_thread(
            letta_agents.list_agents, settings.letta_server_url, settings.letta_api_key,
            timeout=LETTA_TIMEOUT,
        )
    except (letta_agents.LettaAgentError, OSError) as exc:
        return error(502, f"cannot list Letta agents at {settings.letta_server_url}: "
                          f"{_root_cause_line(exc)}")
    rows = [{k: a.get(k) for k in ("id", "name", "model", "created_at")} for a in found]
    return web.json_response({"agents": rows, "default_agent_id": settings.letta_agent_id or None,
                              "letta_url": settings.letta_server_url})


async def token(request: web.Request) -> web.Response:
    """A join token for the browser, minted here so the API secret never leaves the server."""
    room, identity = token_request(await read_json(request))
    return web.json_response(
        livekit_ops.join_token(request.app[SETTINGS], room, identity, TOKEN_TTL)
    )


async def dispatch_agent(request: web.Request) -> web.Response:
    """Dispatch our agent into the room with the chosen Letta agent in the job metadata."""
    settings = request.app[SETTINGS]
    room, agent_id = dispatch_request(await read_json(request))
    warning = None
    if agent_id:
        try:
            found = await asyncio.to_thread(
                letta_agents.find_agent, settings.letta_server_url, settings.letta_api_key,
                agent_id, timeout=LETTA_TIMEOUT,
            )
        except (letta_agents.LettaAgentError, OSError) as exc:
            status = getattr(exc.__cause__, "status_code", None)
            if status is not None and 400 <= status < 500 and status not in (401, 403):
                found = None  # Letta refused the id itself
            else:
                # the voice agent copes with Letta being down: the call goes ahead
                found = {}
                warning = f"could not check the agent on Letta: {_root_cause_line(exc)}"
        if found is None:
            return error(404, f"no Letta agent {agent_id!r} on {settings.letta_server_url}")
    metadata = json.dumps({"letta_agent_id": agent_id}) if agent_id else ""
    dispatched_at = time.time()
    try:
        result = await livekit_ops.dispatch_async(
            settings, room, settings.agent_name, metadata, False, request.app[LKAPI]
        )
    except VoicectlError as exc:
        return error(502, f"dispatch failed: {exc}")
    result["dispatched_at"] = dispatched_at
    if warning:
        result["warning"] = warning
    log.info("dispatched %s into %s (letta agent %s): %s", settings.agent_name, room,
             agent_id or "default", result["dispatch_id"])
    return web.json_response(result)


async def dispatch_why(request: web.Request) -> web.Response:
    """Why no agent came to the room after a dispatch: what the worker and its events show."""
    from voicectl.livekit.dispatch_why import explain

    settings = request.app[SETTINGS]
    room, since = why_request(request.query)
    found = await asyncio.to_thread(explain, settings, room, settings.agent_name, since)
    return web.json_response({"room": room, "agent_name": settings.agent_name, **found})


def _root_cause_line(exc: BaseException) -> str:
    """The root cause's message, one line (LettaAgentError repeats the URL we already give)."""
    if isinstance(exc, letta_agents.LettaAgentError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return first_line(exc)[:300]


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = request.app[CSP]
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store" if request.path.startswith("/api/") \
        else "no-cache"


def create_app(settings: Settings, bind_host: str = "127.0.0.1") -> web.Application:
    """The application; its LiveKit API client lives as long as the app."""
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[BIND_HOST] = bind_host
    app[CSP] = content_security_policy(settings.livekit_url)

    async def lkapi_context(app: web.Application):  # noqa: ANN202 - aiohttp cleanup context
        import aiohttp
        from livekit import api

        app[LKAPI] = api.LiveKitAPI(
            settings.livekit_http_url, settings.livekit_api_key, settings.livekit_api_secret,
            timeout=aiohttp.ClientTimeout(total=LIVEKIT_TIMEOUT),
        )
        yield
        await app[LKAPI].aclose()

    app.cleanup_ctx.append(lkapi_context)
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", index)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/agents", agents)
    app.router.add_post("/api/token", token)
    app.router.add_post("/api/dispatch-agent", dispatch_agent)
    app.router.add_get("/api/dispatch-why", dispatch_why)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app
