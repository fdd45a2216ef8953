"""Tests of the fake LiveKit server (tests/fakes/livekit_server.py).

Real subprocesses and sockets throughout: the fake runs as a process, clients are livekit-api's
``LiveKitAPI``, aiohttp, a hand-driven protocol worker, and one real livekit-agents worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent as agent_pb

from tests.fakes.livekit_server import (
    REPO_ROOT,
    FakeLiveKit,
    free_port,
    start_fake_livekit,
)

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

WORKER_APP = REPO_ROOT / "tests" / "fakes" / "worker_app.py"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeLiveKit]:
    """One fake server with real-server semantics, shared by this module's tests."""
    state_file = tmp_path_factory.mktemp("fake-livekit") / "state.json"
    handle = start_fake_livekit(state_file=state_file)
    yield handle
    assert handle.stop() == 0, handle.logs()


@pytest.fixture(scope="module")
def lenient_fake() -> Iterator[FakeLiveKit]:
    """A fake with the fake-only redispatch and a short availability timeout."""
    handle = start_fake_livekit(redispatch_on_register=True, availability_timeout=0.5)
    yield handle
    handle.stop()


def room_name() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


def agent_name() -> str:
    return f"agent-{uuid.uuid4().hex[:8]}"


def client(fake: FakeLiveKit, secret: str | None = None, key: str | None = None) -> api.LiveKitAPI:
    return api.LiveKitAPI(fake.url, key or fake.api_key, secret or fake.api_secret)


def admin_token(fake: FakeLiveKit, grants: api.VideoGrants) -> str:
    return api.AccessToken(fake.api_key, fake.api_secret).with_grants(grants).to_jwt()


class RawWorker:
    """A worker driven by hand over the real wire protocol (protobuf over WebSocket)."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session, self.ws = session, ws

    @classmethod
    async def connect(cls, fake: FakeLiveKit) -> RawWorker:
        token = admin_token(fake, api.VideoGrants(agent=True))
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                f"{fake.url}/agent", headers={"Authorization": f"Bearer {token}"}
            )
        except Exception:
            await session.close()
            raise
        return cls(session, ws)

    async def register(self, name: str) -> agent_pb.RegisterWorkerResponse:
        req = agent_pb.RegisterWorkerRequest(type=agent_pb.JT_ROOM, agent_name=name, version="t")
        await self.send(agent_pb.WorkerMessage(register=req))
        return (await self.recv()).register

    async def send(self, msg: agent_pb.WorkerMessage) -> None:
        await self.ws.send_bytes(msg.SerializeToString())

    async def recv(self, timeout: float = 5.0) -> agent_pb.ServerMessage:
        data = await self.ws.receive_bytes(timeout=timeout)
        return agent_pb.ServerMessage.FromString(data)

    async def answer(self, job: agent_pb.Job, available: bool, identity: str = "") -> None:
        resp = agent_pb.AvailabilityResponse(
            job_id=job.id, available=available, participant_identity=identity
        )
        await self.send(agent_pb.WorkerMessage(availability=resp))

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


@pytest.fixture
async def workers() -> AsyncIterator[list[RawWorker]]:
    """Raw workers opened by a test; all closed at teardown."""
    opened: list[RawWorker] = []
    yield opened
    for worker in opened:
        await worker.close()


async def new_worker(
    fake: FakeLiveKit, opened: list[RawWorker], name: str
) -> tuple[RawWorker, str]:
    worker = await RawWorker.connect(fake)
    opened.append(worker)
    worker_id = (await worker.register(name)).worker_id
    return worker, worker_id


def settled_outcome(state: dict[str, Any], dispatch_id: str) -> str | None:
    """The dispatch's outcome once its launch finished, else None."""
    outcome = next(d["outcome"] for d in state["dispatches"] if d["id"] == dispatch_id)
    return None if outcome == "launching" else str(outcome)


def job_by_id(state: dict[str, Any], job_id: str) -> dict[str, Any]:
    return next(j for j in state["jobs"] if j["id"] == job_id)


async def dispatch(
    fake: FakeLiveKit, room: str, name: str, metadata: str = ""
) -> api.AgentDispatch:
    async with client(fake) as lk:
        req = api.CreateAgentDispatchRequest(agent_name=name, room=room, metadata=metadata)
        return await lk.agent_dispatch.create_dispatch(req)


# ------------------------------------------------------------------------- HTTP and Twirp


def test_root_answers_ok(fake: FakeLiveKit) -> None:
    with urllib.request.urlopen(fake.http_url + "/", timeout=5) as resp:
        assert resp.status == 200
        assert resp.read() == b"OK"


async def test_rooms_create_list_delete(fake: FakeLiveKit) -> None:
    name = room_name()
    async with client(fake) as lk:
        room = await lk.room.create_room(api.CreateRoomRequest(name=name, metadata="m"))
        assert room.sid.startswith("RM_") and room.name == name and room.metadata == "m"
        again = await lk.room.create_room(api.CreateRoomRequest(name=name))
        assert again.sid == room.sid  # CreateRoom returns the existing room
        listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[name]))
        assert [r.sid for r in listed.rooms] == [room.sid]
        await lk.room.delete_room(api.DeleteRoomRequest(room=name))
        assert not (await lk.room.list_rooms(api.ListRoomsRequest(names=[name]))).rooms
        with pytest.raises(api.TwirpError) as err:
            await lk.room.delete_room(api.DeleteRoomRequest(room=name))
        assert (err.value.code, err.value.status) == ("not_found", 404)
        participants = await lk.room.list_participants(api.ListParticipantsRequest(room=name))
        assert not participants.participants


async def test_wrong_secret_is_a_plain_401_like_the_real_server(fake: FakeLiveKit) -> None:
    async with client(fake, secret="not-the-secret") as lk:
        with pytest.raises(api.TwirpError) as err:
            await lk.room.list_rooms(api.ListRoomsRequest())
    # the real auth middleware answers 401 with a text body: livekit-api reports code "unknown"
    assert (err.value.status, err.value.code) == (401, "unknown")


async def test_unknown_api_key_is_a_plain_401(fake: FakeLiveKit) -> None:
    async with client(fake, key="nokey") as lk:
        with pytest.raises(api.TwirpError) as err:
            await lk.room.create_room(api.CreateRoomRequest(name=room_name()))
    assert err.value.status == 401


async def test_missing_grant_is_twirp_unauthenticated(fake: FakeLiveKit) -> None:
    token = admin_token(fake, api.VideoGrants(room_create=True))  # but not roomList
    async with api.LiveKitAPI.with_token(token, fake.url) as lk:
        with pytest.raises(api.TwirpError) as err:
            await lk.room.list_rooms(api.ListRoomsRequest())
    assert (err.value.code, err.value.status, err.value.message) == (
        "unauthenticated",
        401,
        "permissions denied",
    )
    wrong_room = admin_token(fake, api.VideoGrants(room_admin=True, room="other"))
    async with api.LiveKitAPI.with_token(wrong_room, fake.url) as lk:
        with pytest.raises(api.TwirpError) as err:
            await lk.agent_dispatch.list_dispatch("mine")
    assert err.value.code == "unauthenticated"


async def test_missing_token_is_twirp_unauthenticated(fake: FakeLiveKit) -> None:
    url = f"{fake.http_url}/twirp/livekit.RoomService/ListRooms"
    async with aiohttp.ClientSession() as http:
        headers = {"Content-Type": "application/protobuf"}
        async with http.post(url, data=b"", headers=headers) as resp:
            assert resp.status == 401
            assert (await resp.json())["code"] == "unauthenticated"


async def test_json_bodies_work(fake: FakeLiveKit) -> None:
    name = room_name()
    token = admin_token(fake, api.VideoGrants(room_create=True, room_list=True))
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{fake.http_url}/twirp/livekit.RoomService"
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{base}/CreateRoom", json={"name": name, "max_participants": 3}) as r:
            assert r.status == 200 and r.content_type == "application/json"
            room = await r.json()
        assert room["name"] == name and room["sid"].startswith("RM_")
        assert room["max_participants"] == 3
        async with http.post(f"{base}/ListRooms", json={"names": [name]}) as r:
            assert [x["sid"] for x in (await r.json())["rooms"]] == [room["sid"]]


@pytest.mark.parametrize(
    ("method", "path", "content_type", "body", "status", "code"),
    [
        ("POST", "livekit.RoomService/NoSuchMethod", "application/protobuf", b"", 404, "bad_route"),
        ("POST", "livekit.NoService/ListRooms", "application/protobuf", b"", 404, "bad_route"),
        ("GET", "livekit.RoomService/ListRooms", "application/protobuf", b"", 404, "bad_route"),
        ("POST", "livekit.RoomService/ListRooms", "text/plain", b"", 404, "bad_route"),
        (
            "POST",
            "livekit.RoomService/ListRooms",
            "application/protobuf",
            b"\xff",
            400,
            "malformed",
        ),
        ("POST", "livekit.RoomService/SendData", "application/protobuf", b"", 501, "unimplemented"),
    ],
)
async def test_twirp_routing_errors(
    fake: FakeLiveKit,
    method: str,
    path: str,
    content_type: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    token = admin_token(fake, api.VideoGrants(room_list=True))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    async with aiohttp.ClientSession() as http:
        url = f"{fake.http_url}/twirp/{path}"
        async with http.request(method, url, data=body, headers=headers) as resp:
            assert resp.status == status
            assert (await resp.json())["code"] == code


async def test_dispatch_api_creates_the_room_and_its_default_dispatch(fake: FakeLiveKit) -> None:
    name, agent = room_name(), agent_name()
    created = await dispatch(fake, name, agent, metadata='{"k": 1}')
    assert created.id.startswith("AD_") and created.agent_name == agent
    assert created.room == name and created.metadata == '{"k": 1}'
    async with client(fake) as lk:
        assert (await lk.room.list_rooms(api.ListRoomsRequest(names=[name]))).rooms
        listed = await lk.agent_dispatch.list_dispatch(name)
        # a new room carries the real server's default dispatch for unnamed workers
        assert sorted(d.agent_name for d in listed) == ["", agent]
        assert (await lk.agent_dispatch.get_dispatch(created.id, name)).id == created.id
        deleted = await lk.agent_dispatch.delete_dispatch(created.id, name)
        assert deleted.state.deleted_at > 0
        assert [d.agent_name for d in await lk.agent_dispatch.list_dispatch(name)] == [""]
        with pytest.raises(api.TwirpError) as err:
            await lk.agent_dispatch.delete_dispatch(created.id, name)
        assert err.value.code == "not_found"
        with pytest.raises(api.TwirpError) as err:
            await lk.agent_dispatch.list_dispatch(room_name())
        assert err.value.code == "not_found"


async def test_state_file_follows_changes(fake: FakeLiveKit) -> None:
    name = room_name()
    async with client(fake) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=name))
    state_file = Path(fake.proc.args[fake.proc.args.index("--state-file") + 1])
    state = json.loads(state_file.read_text())
    assert name in [r["name"] for r in state["rooms"]]


async def test_rtc_is_not_implemented(fake: FakeLiveKit) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.http_url}/rtc/v1?access_token=x") as resp:
            assert resp.status == 501
    assert fake.state()["rtc_attempts"][-1]["path"] == "/rtc/v1"


async def test_agent_endpoint_requires_websocket_and_agent_grant(fake: FakeLiveKit) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.http_url}/agent") as resp:
            assert resp.status == 404
        for token in ("", admin_token(fake, api.VideoGrants(room_admin=True, room="r"))):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(f"{fake.url}/agent", headers=headers)
            assert err.value.status == 401


# ------------------------------------------------------------------- worker protocol


async def test_worker_registers_and_pongs(fake: FakeLiveKit, workers: list[RawWorker]) -> None:
    name = agent_name()
    worker, worker_id = await new_worker(fake, workers, name)
    assert worker_id.startswith("AW_")
    await worker.send(agent_pb.WorkerMessage(ping=agent_pb.WorkerPing(timestamp=1234)))
    pong = (await worker.recv()).pong
    assert pong.last_timestamp == 1234 and pong.timestamp > 0
    entry = next(w for w in fake.state()["workers"] if w["id"] == worker_id)
    assert (entry["agent_name"], entry["status"], entry["version"]) == (name, "available", "t")


async def test_dispatch_is_offered_and_assigned(
    fake: FakeLiveKit, workers: list[RawWorker]
) -> None:
    name, room = agent_name(), room_name()
    worker, worker_id = await new_worker(fake, workers, name)
    created = await dispatch(fake, room, name, metadata="hello")
    job = (await worker.recv()).availability.job
    assert job.id.startswith("AJ_") and job.dispatch_id == created.id
    assert (job.type, job.room.name, job.agent_name, job.metadata) == (
        agent_pb.JT_ROOM,
        room,
        name,
        "hello",
    )
    assert job.room.sid.startswith("RM_")
    await worker.answer(job, available=True, identity="agent-me")
    assignment = (await worker.recv()).assignment
    assert assignment.job.id == job.id and assignment.url == ""
    claims = api.TokenVerifier(fake.api_key, fake.api_secret).verify(assignment.token)
    assert (claims.identity, claims.kind) == ("agent-me", "agent")
    assert claims.video.room_join and claims.video.agent and claims.video.room == room
    assert claims.attributes["lk.agent_name"] == name
    assert job_by_id(fake.state(), job.id)["state"] == "accepted"

    running = agent_pb.UpdateJobStatus(job_id=job.id, status=agent_pb.JS_RUNNING)
    await worker.send(agent_pb.WorkerMessage(update_job=running))
    fake.wait_for(lambda s: job_by_id(s, job.id)["state"] == "running", timeout=5)
    async with client(fake) as lk:
        listed = await lk.agent_dispatch.get_dispatch(created.id, room)
    assert [j.id for j in listed.state.jobs] == [job.id]
    assert listed.state.jobs[0].state.participant_identity == "agent-me"
    assert listed.state.jobs[0].state.worker_id == worker_id

    done = agent_pb.UpdateJobStatus(job_id=job.id, status=agent_pb.JS_SUCCESS)
    await worker.send(agent_pb.WorkerMessage(update_job=done))
    fake.wait_for(lambda s: job_by_id(s, job.id)["state"] == "success", timeout=5)


async def test_declined_job_goes_to_the_next_worker(
    fake: FakeLiveKit, workers: list[RawWorker]
) -> None:
    name = agent_name()
    first, first_id = await new_worker(fake, workers, name)
    second, second_id = await new_worker(fake, workers, name)
    await dispatch(fake, room_name(), name)
    job = (await first.recv()).availability.job  # the first registered is asked first
    await first.answer(job, available=False)
    offered = (await second.recv()).availability.job
    assert offered.id == job.id
    await second.answer(offered, available=True, identity="second")
    assert (await second.recv()).assignment.job.id == job.id
    record = job_by_id(fake.state(), job.id)
    assert record["worker_id"] == second_id and record["state"] == "accepted"
    assert record["attempts"] == [
        {"worker_id": first_id, "outcome": "declined"},
        {"worker_id": second_id, "outcome": "accepted"},
    ]


async def test_full_worker_is_not_offered_jobs(fake: FakeLiveKit, workers: list[RawWorker]) -> None:
    name, room = agent_name(), room_name()
    worker, _ = await new_worker(fake, workers, name)
    full = agent_pb.UpdateWorkerStatus(status=agent_pb.WS_FULL, load=0.9)
    await worker.send(agent_pb.WorkerMessage(update_worker=full))
    fake.wait_for(lambda s: any(w["status"] == "full" for w in s["workers"]), timeout=5)
    created = await dispatch(fake, room, name)
    assert fake.wait_for(lambda s: settled_outcome(s, created.id)) == "no_worker"


async def test_dispatch_without_worker_is_dropped_like_the_real_server(
    fake: FakeLiveKit, workers: list[RawWorker]
) -> None:
    name = agent_name()
    await dispatch(fake, room_name(), name)
    worker, _ = await new_worker(fake, workers, name)
    with pytest.raises(TimeoutError):
        await worker.recv(timeout=0.5)


async def test_redispatch_on_register_is_opt_in(
    lenient_fake: FakeLiveKit, workers: list[RawWorker]
) -> None:
    name = agent_name()
    created = await dispatch(lenient_fake, room_name(), name)
    worker, _ = await new_worker(lenient_fake, workers, name)
    job = (await worker.recv()).availability.job
    assert job.dispatch_id == created.id


async def test_unanswered_offer_times_out(
    lenient_fake: FakeLiveKit, workers: list[RawWorker]
) -> None:
    name = agent_name()
    worker, _ = await new_worker(lenient_fake, workers, name)
    await dispatch(lenient_fake, room_name(), name)
    job = (await worker.recv()).availability.job
    lenient_fake.wait_for(lambda s: job_by_id(s, job.id)["state"] == "timeout", timeout=5)


async def test_delete_dispatch_terminates_its_job(
    fake: FakeLiveKit, workers: list[RawWorker]
) -> None:
    name, room = agent_name(), room_name()
    worker, _ = await new_worker(fake, workers, name)
    created = await dispatch(fake, room, name)
    job = (await worker.recv()).availability.job
    await worker.answer(job, available=True, identity="a")
    await worker.recv()  # the assignment
    async with client(fake) as lk:
        await lk.agent_dispatch.delete_dispatch(created.id, room)
    assert (await worker.recv()).termination.job_id == job.id
    record = job_by_id(fake.state(), job.id)
    assert (record["state"], record["terminated"]) == ("success", True)


async def test_worker_speaking_json_text_gets_json(fake: FakeLiveKit) -> None:
    token = admin_token(fake, api.VideoGrants(agent=True))
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.ws_connect(f"{fake.url}/agent", headers=headers) as ws:
            await ws.send_str(json.dumps({"register": {"type": "JT_ROOM", "agentName": "j"}}))
            reply = json.loads(await ws.receive_str(timeout=5))
    assert reply["register"]["workerId"].startswith("AW_")


# ------------------------------------------------------------------------ the process


async def test_module_run_uses_livekit_url_port_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, LIVEKIT_URL=f"ws://127.0.0.1:{port}")
    log_path = tmp_path / "fake.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.livekit_server"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
    handle = FakeLiveKit(proc, "127.0.0.1", port, "devkey", "secret", log_path)
    try:
        assert _ready(handle), handle.logs()
        assert await _hold_worker_and_stop(handle), handle.logs()
        assert proc.wait(5) == 0, handle.logs()
    finally:
        handle.stop()


def _ready(handle: FakeLiveKit, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(handle.http_url + "/", timeout=1) as resp:
                return resp.read() == b"OK"
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise AssertionError(handle.logs())


async def _hold_worker_and_stop(handle: FakeLiveKit) -> bool:
    """With a worker connected, SIGTERM must still end the fake within a second or two."""
    worker = await RawWorker.connect(handle)
    try:
        await worker.register("held")
        started = time.monotonic()
        handle.proc.send_signal(signal.SIGTERM)
        msg = await worker.ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        return time.monotonic() - started < 3
    finally:
        await worker.close()


def test_port_in_use_exits_1(fake: FakeLiveKit) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tests/fakes/livekit_server.py"),
            "--port",
            str(fake.port),
        ],
        capture_output=True,
        timeout=15,
    )
    assert result.returncode == 1
    assert b"cannot listen" in result.stderr


# ----------------------------------------------------------- a real livekit-agents worker


@pytest.fixture
def real_worker(fake: FakeLiveKit, tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """`python -m livekit.agents start tests/fakes/worker_app.py` against the fake."""
    name, http_port = agent_name(), free_port()
    env = dict(
        os.environ,
        **fake.env(),
        FAKE_AGENT_NAME=name,
        FAKE_AGENT_HTTP_PORT=str(http_port),
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "livekit.agents", "start", str(WORKER_APP)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield name, http_port, log_path
    finally:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group (worker, forkserver, job processes), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; make sure no child outlives it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


@pytest.mark.timeout(90)
async def test_real_worker_registers_and_accepts_a_dispatch(
    fake: FakeLiveKit, real_worker: tuple[str, int, Path]
) -> None:
    name, http_port, log_path = real_worker
    worker = fake.wait_for(
        lambda s: next((w for w in s["workers"] if w["agent_name"] == name), None), timeout=45
    )
    assert worker["version"] and worker["status"] == "available", log_path.read_text()
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/worker", timeout=5) as resp:
        info = json.loads(resp.read())
    assert (info["agent_name"], info["worker_type"]) == (name, "JT_ROOM")

    room = room_name()
    created = await dispatch(fake, room, name)
    started = time.monotonic()
    job = fake.wait_for(
        lambda s: next(
            (
                j
                for j in s["jobs"]
                if j["dispatch_id"] == created.id and j["state"] in ("accepted", "running")
            ),
            None,
        ),
        timeout=10,
    )
    assert time.monotonic() - started < 5, log_path.read_text()
    assert job["worker_id"] == worker["id"] and job["participant_identity"]
    # the job process then tries to join the room with the assigned token: /rtc answers 501
    attempt = fake.wait_for(
        lambda s: next((a for a in s["rtc_attempts"] if a.get("room") == room), None),
        timeout=15,
    )
    assert attempt["token_valid"] and attempt["identity"] == job["participant_identity"]
    assert attempt["kind"] == "agent"
