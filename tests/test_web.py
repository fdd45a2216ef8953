"""The browser console: its API (input checks, origin policy, token, dispatch) and the page.

The console runs as a real subprocess (`python -m voicectl.web`) against the LiveKit dev
server (`python -m voicectl.livekit_dev`) and, where agents are listed, the real Letta server
(`managed_letta`). The page runs in Debian's Chromium, driven by playwright-core from npm
(tests/web/driver.mjs): the driver only acts and observes, the assertions are here. Set-up:
scripts/install_test_deps.sh.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from livekit.api import TokenVerifier

from tests.support.browser import run_browser
from tests.support.livekit import DevLiveKit, start_dev_livekit
from tests.support.ports import dead_url, free_port
from tests.support.project import base_env
from voicectl.letta import agents as letta_agents
from voicectl.web.probe import probe_web

AGENT_NAME = "letta-voice-agent"
SCREENSHOT = Path("/tmp/web-console.png")
UNKNOWN_AGENT = "agent-00000000-0000-4000-8000-000000000000"
# the dev secret is short, as `livekit-server --dev`'s is
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


@dataclass
class WebConsole:
    """A running `python -m voicectl.web`; `call` speaks HTTP to it."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON body or text, headers); JSON-encodes `body` unless `raw` is given."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, payload, hdrs = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            status, payload, hdrs = exc.code, exc.read(), dict(exc.headers)
        try:
            return status, json.loads(payload), hdrs
        except ValueError:
            return status, payload.decode(errors="replace"), hdrs

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_web(livekit: dict[str, str], letta_url: str) -> WebConsole:
    """Start the console in an empty project directory (no .env) and wait for its probe."""
    workdir = Path(tempfile.mkdtemp(prefix="voicectl-web-"))
    env = base_env(workdir / ".voicectl")
    env.update(livekit)
    env.update(LETTA_SERVER_URL=letta_url, LETTA_MODE="external", PYTHONUNBUFFERED="1")
    port = free_port()
    log_path = workdir / "web.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "voicectl.web", "--port", str(port)],
                                cwd=workdir, env=env, stdout=log_file, stderr=log_file,
                                stdin=subprocess.DEVNULL)
    web = WebConsole(proc, port, log_path)
    deadline = time.monotonic() + 20
    while not probe_web(port).ok:
        if proc.poll() is not None or time.monotonic() > deadline:
            web.stop()
            raise AssertionError(f"web console did not start:\n{web.log()}")
        time.sleep(0.05)
    return web


def dispatches(fake: DevLiveKit, room: str) -> list[dict[str, Any]]:
    """Our agent's dispatches into `room` on the dev server."""
    return [d for d in fake.state()["dispatches"]
            if d["room"] == room and d["agent_name"] == AGENT_NAME]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fake_lk() -> Iterator[DevLiveKit]:
    with start_dev_livekit() as fake:
        yield fake


@pytest.fixture(scope="module")
def web_offline(fake_lk: DevLiveKit) -> Iterator[WebConsole]:
    """The console with the LiveKit dev server and no Letta server."""
    web = start_web(fake_lk.env(), dead_url())
    yield web
    assert web.stop() == 0, web.log()


@pytest.fixture(scope="module")
def web_broken() -> Iterator[WebConsole]:
    """The console with neither LiveKit nor Letta reachable."""
    web = start_web({"LIVEKIT_URL": dead_url("ws")}, dead_url())
    yield web
    web.stop()


@pytest.fixture(scope="module")
def letta_agent(managed_letta: Any) -> dict[str, Any]:
    """A voice agent created on the real Letta server for these tests."""
    return letta_agents.create_voice_agent(
        managed_letta.base_url, None, "web-console-test", "gpt-5-mini",
        "text-embedding-3-small", None, 1536, managed_letta.stub.base_url,
    )


@pytest.fixture(scope="module")
def web_live(fake_lk: DevLiveKit, managed_letta: Any) -> Iterator[WebConsole]:
    """The console with the LiveKit dev server and the real Letta."""
    web = start_web(fake_lk.env(), managed_letta.base_url)
    yield web
    web.stop()


# ------------------------------------------------------------------------------ health


def test_health_reports_each_dependency(web_offline: WebConsole, web_broken: WebConsole) -> None:
    status, body, _ = web_offline.call("GET", "/api/health")
    assert status == 200
    assert (body["status"], body["livekit"], body["letta"]) == ("degraded", "ok", "err")
    assert "connection refused" in body["details"]["letta"]
    status, body, _ = web_broken.call("GET", "/api/health")
    assert (status, body["livekit"], body["letta"]) == (200, "err", "err")
    assert "cannot reach LiveKit" in body["details"]["livekit"]
    # the readiness probe skips the dependencies
    assert web_broken.call("GET", "/api/health?deps=0")[1] == {
        "status": "ok", "service": "voicectl-web"}


def test_probe_tells_the_console_from_other_servers(web_offline: WebConsole,
                                                   fake_lk: DevLiveKit) -> None:
    assert probe_web(web_offline.port).ok
    assert not probe_web(fake_lk.port).ok
    assert "connection refused" in probe_web(free_port()).detail


# ------------------------------------------------------------------------ token, dispatch


def test_token_is_minted_for_the_room_and_verifies(web_offline: WebConsole,
                                                   fake_lk: DevLiveKit) -> None:
    status, body, _ = web_offline.call("POST", "/api/token",
                                       {"room": "tok-room", "identity": "web-alice"})
    assert status == 200, body
    assert body["url"] == fake_lk.url
    claims = TokenVerifier(fake_lk.api_key, fake_lk.api_secret).verify(body["token"])
    assert claims.identity == "web-alice"
    assert claims.video.room == "tok-room" and claims.video.room_join
    assert not claims.video.room_admin and not claims.video.room_create


def test_dispatch_reaches_livekit_with_the_letta_agent_in_metadata(
        web_offline: WebConsole, fake_lk: DevLiveKit) -> None:
    agent_id = "agent-1b2c3d4e-0000-4000-8000-123456789abc"
    status, body, _ = web_offline.call("POST", "/api/dispatch-agent",
                                       {"room": "disp-room", "letta_agent_id": agent_id})
    assert status == 200, body
    assert body["agent_name"] == AGENT_NAME and body["dispatch_id"].startswith("AD_")
    # Letta is down: the agent copes with that, so the dispatch goes ahead with a warning
    assert "could not check the agent on Letta" in body["warning"]
    [found] = dispatches(fake_lk, "disp-room")
    assert found["id"] == body["dispatch_id"]
    assert json.loads(found["metadata"]) == {"letta_agent_id": agent_id}


def test_dispatch_without_an_agent_id_uses_the_agents_default(
        web_offline: WebConsole, fake_lk: DevLiveKit) -> None:
    status, body, _ = web_offline.call("POST", "/api/dispatch-agent",
                                       {"room": "default-room", "letta_agent_id": None})
    assert status == 200, body
    assert "warning" not in body
    assert [d["metadata"] for d in dispatches(fake_lk, "default-room")] == [""]


def test_livekit_down_is_a_502_with_the_reason(web_broken: WebConsole) -> None:
    status, body, _ = web_broken.call("POST", "/api/dispatch-agent", {"room": "r1"})
    assert status == 502
    assert body["error"].startswith("dispatch failed: cannot reach LiveKit at http://127.0.0.1:")


def test_letta_down_is_a_502_on_the_agent_list(web_offline: WebConsole) -> None:
    status, body, _ = web_offline.call("GET", "/api/agents")
    assert status == 502
    assert body["error"].startswith("cannot list Letta agents at http://127.0.0.1:")


# -------------------------------------------------------------------------- bad input

BIG = "x" * 5000
BAD_INPUT = [
    ("/api/token", b"{not json", 400, "not valid JSON"),
    ("/api/token", b"[]", 400, "JSON object"),
    ("/api/token", {"identity": "a"}, 400, "missing field 'room'"),
    ("/api/token", {"room": "r", "identity": ""}, 400, "missing field 'identity'"),
    ("/api/token", {"room": 5, "identity": "a"}, 400, "must be a string"),
    ("/api/token", {"room": "has space", "identity": "a"}, 400, "invalid room name"),
    ("/api/token", {"room": "../etc", "identity": "a"}, 400, "invalid room name"),
    ("/api/token", {"room": "r" * 129, "identity": "a"}, 400, "invalid room name"),
    ("/api/token", {"room": "r", "identity": "a b"}, 400, "invalid identity"),
    ("/api/token", {"room": "r", "identity": "a", "admin": True}, 400, "unexpected field"),
    ("/api/token", {"room": BIG, "identity": "a"}, 413, "larger than"),
    ("/api/dispatch-agent", {"letta_agent_id": "agent-1"}, 400, "missing field 'room'"),
    ("/api/dispatch-agent", {"room": "r", "letta_agent_id": "../x"}, 400, "invalid letta_agent_id"),
    ("/api/dispatch-agent", {"room": "r", "letta_agent_id": "agent-<b>"}, 400,
     "invalid letta_agent_id"),
    ("/api/dispatch-agent", {"room": "r", "letta_agent_id": 7}, 400, "must be a string"),
    ("/api/dispatch-agent", {"room": "r", "metadata": "{}"}, 400, "unexpected field"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD_INPUT,
                         ids=[f"{p.rsplit('/', 1)[1]}-{m}" for p, _, _, m in BAD_INPUT])
def test_bad_input_is_refused_with_a_reason(web_offline: WebConsole, fake_lk: DevLiveKit,
                                            path: str, body: Any, status: int,
                                            message: str) -> None:
    before = len(fake_lk.state()["dispatches"])
    raw = body if isinstance(body, bytes) else None
    got, answer, _ = web_offline.call("POST", path, None if raw else body, raw=raw)
    assert got == status, answer
    assert message in answer["error"]
    assert len(fake_lk.state()["dispatches"]) == before


def test_non_json_content_type_is_refused(web_offline: WebConsole) -> None:
    status, body, _ = web_offline.call("POST", "/api/token", raw=b"room=r&identity=a",
                                       headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in body["error"]


# ----------------------------------------------------------------------- cross-origin

FOREIGN_ORIGINS = ["http://evil.example", "null", "http://127.0.0.1:1", "https://localhost.evil"]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_cross_origin_requests_are_refused(web_offline: WebConsole, fake_lk: DevLiveKit,
                                           origin: str) -> None:
    before = len(fake_lk.state()["dispatches"])
    for method, path, body in (("POST", "/api/dispatch-agent", {"room": "xo-room"}),
                               ("POST", "/api/token", {"room": "xo", "identity": "a"}),
                               ("GET", "/api/agents", None), ("OPTIONS", "/api/token", None)):
        status, answer, headers = web_offline.call(method, path, body,
                                                   headers={"Origin": origin})
        assert status == 403, (method, path, answer)
        assert "cross-origin request" in answer["error"]
        assert not any(h.lower().startswith("access-control-") for h in headers)
    assert len(fake_lk.state()["dispatches"]) == before


def test_own_origin_is_served(web_offline: WebConsole) -> None:
    for host in (f"127.0.0.1:{web_offline.port}", f"localhost:{web_offline.port}"):
        status, body, headers = web_offline.call(
            "POST", "/api/token", {"room": "own", "identity": "a"},
            headers={"Origin": f"http://{host}", "Host": host})
        assert status == 200, body
        assert not any(h.lower().startswith("access-control-") for h in headers)


def test_foreign_host_header_is_refused(web_offline: WebConsole) -> None:
    """A DNS-rebinding page sends its own name as Host (and as a matching Origin)."""
    host = f"rebind.evil.example:{web_offline.port}"
    for path in ("/", "/api/health?deps=0"):
        status, body, _ = web_offline.call("GET", path,
                                           headers={"Host": host, "Origin": f"http://{host}"})
        assert status == 403 and "not allowed" in body["error"]


def test_page_headers_lock_down_the_page(web_offline: WebConsole, fake_lk: DevLiveKit) -> None:
    status, html, headers = web_offline.call("GET", "/")
    assert status == 200 and "livekit-client.umd.js" in html
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert f"connect-src 'self' {fake_lk.url} {fake_lk.http_url}" in csp
    assert headers["X-Frame-Options"] == "DENY"
    status, _, headers = web_offline.call("GET", "/static/vendor/livekit-client.umd.js")
    assert status == 200 and "javascript" in headers["Content-Type"]
    assert web_offline.call("GET", "/static/../server.py")[0] in (403, 404)


# ------------------------------------------------------------------------- real Letta


def test_agents_lists_the_letta_agents(web_live: WebConsole, letta_agent: dict) -> None:
    status, body, _ = web_live.call("GET", "/api/agents")
    assert status == 200, body
    rows = {a["id"]: a for a in body["agents"]}
    assert rows[letta_agent["id"]]["name"] == "web-console-test"
    assert set(rows[letta_agent["id"]]) == {"id", "name", "model", "created_at"}


@pytest.mark.parametrize("agent_id", [UNKNOWN_AGENT, "agent-not-a-uuid"])
def test_unknown_letta_agent_is_a_404_and_not_dispatched(web_live: WebConsole,
                                                         fake_lk: DevLiveKit,
                                                         agent_id: str) -> None:
    status, body, _ = web_live.call("POST", "/api/dispatch-agent",
                                    {"room": "ghost-room", "letta_agent_id": agent_id})
    assert status == 404 and agent_id in body["error"]
    assert dispatches(fake_lk, "ghost-room") == []


# ---------------------------------------------------------------------------- browser


PAGE_PARTICIPANT = """() => {
  const lp = window.voiceConsole.state.room.localParticipant;
  const audio = [...lp.trackPublications.values()].filter((t) => t.kind === 'audio');
  return {identity: lp.identity, sid: lp.sid, audio_tracks: audio.length};
}"""


def test_page_lists_agents_and_connect_dispatches(web_live: WebConsole, fake_lk: DevLiveKit,
                                                 letta_agent: dict) -> None:
    room = "browser-room"
    out = run_browser([
        {"op": "goto", "url": web_live.url + "/"},
        {"op": "wait_text", "selector": "#agent-select", "pattern": "web-console-test"},
        {"op": "wait_text", "selector": "#health-letta", "pattern": "Letta ok"},
        {"op": "select", "selector": "#agent-select", "value": letta_agent["id"]},
        {"op": "fill", "selector": "#room-input", "value": room},
        {"op": "click", "selector": "#connect-btn"},
        {"op": "wait_text", "selector": "#conn-state", "pattern": "^connected$"},
        {"op": "wait_text", "selector": "#activity", "pattern": "microphone on"},
        {"op": "text", "selector": "#errors"},
        {"op": "text", "selector": "#activity"},
        {"op": "text", "selector": "#dispatch-info"},
        {"op": "text", "selector": "#agent-status"},
        {"op": "call", "fn": PAGE_PARTICIPANT},
        {"op": "screenshot", "path": str(SCREENSHOT), "full_page": True},
    ])
    errors, activity, dispatch_info, agent_status, me = out["results"][8:13]
    assert errors.strip() == "", errors
    assert "token minted for web-" in activity
    assert f"with Letta agent {letta_agent['id']}" in activity
    assert "connection: connected" in activity
    # no worker runs here: the agent was dispatched and is awaited
    assert f"waiting for {AGENT_NAME} to join" in agent_status
    # the dispatch reached LiveKit with the chosen Letta agent; the browser joined the room
    [found] = dispatches(fake_lk, room)
    assert json.loads(found["metadata"]) == {"letta_agent_id": letta_agent["id"]}
    assert found["id"] in dispatch_info
    # the server saw that participant join with the JS SDK and publish its fake microphone
    # (the browser has closed by now, so its log says it, not the live state)
    assert me["identity"].startswith("web-") and me["sid"].startswith("PA_"), me
    assert me["audio_tracks"] == 1, me
    logs = fake_lk.logs()
    assert (f"participant joined room={room} identity={me['identity']} sid={me['sid']} "
            "kind=STANDARD sdk=js ") in logs
    assert f"track published room={room} identity={me['identity']}" in logs


def test_page_shows_letta_and_livekit_failures(web_broken: WebConsole) -> None:
    out = run_browser([
        {"op": "goto", "url": web_broken.url + "/"},
        {"op": "wait_text", "selector": "#errors", "pattern": "Letta agents"},
        {"op": "wait_text", "selector": "#health-livekit", "pattern": "LiveKit down"},
        {"op": "text", "selector": "#errors"},
        {"op": "click", "selector": "#connect-btn"},
        {"op": "wait_text", "selector": "#errors", "pattern": "^dispatch:"},
        {"op": "text", "selector": "#errors"},
        {"op": "text", "selector": "#conn-state"},
    ])
    agents_error, dispatch_error, conn_state = out["results"][3], *out["results"][6:8]
    assert "cannot list Letta agents" in agents_error
    assert "cannot reach LiveKit" in dispatch_error
    assert conn_state == "failed"


TRANSCRIPT_SCRIPT = """async () => {
  const vc = window.voiceConsole;
  // a stand-in room: the transcript code reads the local identity and the local track sids
  vc.state.room = {localParticipant: {identity: 'web-me',
    trackPublications: new Map([['TR_mic', {trackSid: 'TR_mic'}]])}};
  // a text stream as livekit-client hands it over: the trailer's attributes are merged into
  // info.attributes once the stream has ended
  const stream = (attrs, chunks, trailer = {}) => {
    const info = {id: 'S' + Math.random(), attributes: attrs};
    const done = () => { info.attributes = {...info.attributes, ...trailer}; };
    return {
      info,
      readAll: async () => { done(); return chunks.join(''); },
      async *[Symbol.asyncIterator]() { for (const c of chunks) yield c; done(); },
    };
  };
  // livekit-agents sends both sides from the agent: your transcript names your track
  const agent = {identity: 'agent-AJ_1'};
  const mine = {'lk.transcribed_track_id': 'TR_mic'};
  const its = {'lk.transcribed_track_id': 'TR_agent'};
  await vc.onTranscriptionStream(stream({...mine, 'lk.segment_id': 'U1',
    'lk.transcription_final': 'false'}, ['what is']), agent);
  await vc.onTranscriptionStream(stream({...mine, 'lk.segment_id': 'U1',
    'lk.transcription_final': 'true'}, ['what is the time']), agent);
  await vc.onTranscriptionStream(stream({...its, 'lk.segment_id': 'A1',
    'lk.transcription_final': 'false'}, ['It is ', 'noon.'],
    {'lk.transcription_final': 'true'}), agent);
  await vc.onTranscriptionStream(stream({...mine, 'lk.segment_id': 'U2',
    'lk.transcription_final': 'true'}, ['thanks']), agent);
  await vc.onTranscriptionStream(stream({...its, 'lk.segment_id': 'A2',
    'lk.transcription_final': 'false'}, ['You are ', 'welcome.'],
    {'lk.transcription_final': 'true'}), agent);
  vc.state.room = null;
  return {
    messages: [...document.querySelectorAll('#transcript .msg')].map(
      (m) => [m.className, m.querySelector('.text').textContent]),
    latency: [...document.querySelectorAll('#latency-list tr')].map(
      (r) => [...r.children].map((c) => c.textContent)),
    average: document.getElementById('latency-avg').textContent,
    average_text: document.getElementById('latency-avg-text').textContent,
  };
}"""


def test_page_renders_transcript_and_turn_latency(web_offline: WebConsole) -> None:
    """Transcript events as livekit-agents sends them (no media server needed)."""
    out = run_browser([
        {"op": "goto", "url": web_offline.url + "/"},
        {"op": "call", "fn": TRANSCRIPT_SCRIPT},
        {"op": "screenshot", "path": "/tmp/web-console-transcript.png"},
    ])
    got = out["results"][1]
    assert got["messages"] == [
        ["msg user", "what is the time"], ["msg agent", "It is noon."],
        ["msg user", "thanks"], ["msg agent", "You are welcome."],
    ]
    # no audio in this page: voice to voice is not measured; the first turn was answered in
    # text only, the second is still open
    assert [row[:3] for row in got["latency"]] == [["1", "what is the time", "no audio"],
                                                   ["2", "thanks", "…"]]
    assert all(row[3].endswith(" ms") and int(row[3].split()[0]) >= 0 for row in got["latency"])
    assert got["average"] == "–" and got["average_text"].endswith(" ms")
