"""The LiveKit dev server's APIs, held to livekit-server 1.13's behaviour.

Twirp (RoomService, AgentDispatchService) through livekit-api and the npm
``livekit-server-sdk``, the worker protocol ``/agent`` through hand-driven raw workers and one
real livekit-agents worker, room lifetimes through real ``livekit`` rtc clients, and the
process itself (keys, signals, ports). Real subprocesses and sockets throughout; timeouts are
shortened with the server's options where a test waits on one.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from livekit import api, rtc
from livekit.protocol import agent as agent_pb

from tests.support.livekit import (
    DEV_SERVER_CMD,
    DevLiveKit,
    start_dev_livekit,
    wait_ready,
)
from tests.support.ports import free_port
from tests.support.project import REPO

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

WORKER_APP = REPO / "tests" / "fakes" / "worker_app.py"
SDK_SCRIPT = REPO / "tests" / "web" / "server_sdk.mjs"
SERVER_SDK = REPO / "tests" / "web" / "node_modules" / "livekit-server-sdk"

AVAILABILITY_TIMEOUT = 0.5
EMPTY_TIMEOUT = 1.0
DEPARTURE_TIMEOUT = 2.0  # longer than EMPTY_TIMEOUT: the two are told apart
MISSING_ROOM_DELAY = 0.2


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevLiveKit]:
    """One dev server with the real server's timeouts, shared by this module's tests."""
    state_file = tmp_path_factory.mktemp("livekit-dev") / "state.json"
    handle = start_dev_livekit(state_file=state_file)
    yield handle
    assert handle.stop() == 0, handle.logs()


@pytest.fixture(scope="module")
def quick() -> Iterator[DevLiveKit]:
    """A dev server with every timeout shortened (offers, empty rooms, missing rooms)."""
    handle = start_dev_livekit(
        availability_timeout=AVAILABILITY_TIMEOUT, empty_timeout=EMPTY_TIMEOUT,
        departure_timeout=DEPARTURE_TIMEOUT, missing_room_delay=MISSING_ROOM_DELAY,
    )
    yield handle
    assert handle.stop() == 0, handle.logs()


@pytest.fixture(scope="module")
def lenient() -> Iterator[DevLiveKit]:
    """A dev server with the dev-only redispatch on register."""
    handle = start_dev_livekit(redispatch_on_register=True)
    yield handle
    handle.stop()


def room_name() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


def agent_name() -> str:
    return f"agent-{uuid.uuid4().hex[:8]}"


def client(lk: DevLiveKit, secret: str | None = None, key: str | None = None) -> api.LiveKitAPI:
    return api.LiveKitAPI(lk.url, key or lk.api_key, secret or lk.api_secret)


def admin_token(lk: DevLiveKit, grants: api.VideoGrants) -> str:
    return api.AccessToken(lk.api_key, lk.api_secret).with_grants(grants).to_jwt()


def join_token(lk: DevLiveKit, room: str, identity: str, kind: str = "") -> str:
    token = (api.AccessToken(lk.api_key, lk.api_secret).with_identity(identity)
             .with_grants(api.VideoGrants(room_join=True, room=room)))
    if kind:
        token = token.with_kind(kind)
    return token.to_jwt()


class RawWorker:
    """A worker driven by hand over the real wire protocol (protobuf over WebSocket).

    A reader task queues what the server sends, so tests can wait on several workers at once.
    """

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session, self.ws = session, ws
        self.inbox: asyncio.Queue[agent_pb.ServerMessage] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.worker_id = ""
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, lk: DevLiveKit) -> RawWorker:
        token = admin_token(lk, api.VideoGrants(agent=True))
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                f"{lk.url}/agent", headers={"Authorization": f"Bearer {token}"}
            )
        except Exception:
            await session.close()
            raise
        return cls(session, ws)

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.inbox.put_nowait(agent_pb.ServerMessage.FromString(msg.data))
        self.close_code = self.ws.close_code
        self.closed.set()

    async def register(self, name: str) -> agent_pb.RegisterWorkerResponse:
        req = agent_pb.RegisterWorkerRequest(type=agent_pb.JT_ROOM, agent_name=name, version="t")
        await self.send(agent_pb.WorkerMessage(register=req))
        response = (await self.recv()).register
        self.worker_id = response.worker_id
        return response

    async def send(self, msg: agent_pb.WorkerMessage) -> None:
        await self.ws.send_bytes(msg.SerializeToString())

    async def recv(self, timeout: float = 5.0) -> agent_pb.ServerMessage:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def report(self, load: float, status: int = agent_pb.WS_AVAILABLE) -> None:
        update = agent_pb.UpdateWorkerStatus(status=status, load=load)
        await self.send(agent_pb.WorkerMessage(update_worker=update))

    async def answer(self, job: agent_pb.Job, available: bool, identity: str = "") -> None:
        resp = agent_pb.AvailabilityResponse(
            job_id=job.id, available=available, participant_identity=identity
        )
        await self.send(agent_pb.WorkerMessage(availability=resp))

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()
        await self._reader


@pytest_asyncio.fixture(loop_scope="function")  # the tests' loop: readers run on it
async def workers() -> AsyncIterator[list[RawWorker]]:
    """Raw workers opened by a test; all closed at teardown."""
    opened: list[RawWorker] = []
    yield opened
    for worker in opened:
        await worker.close()


async def new_worker(
    lk: DevLiveKit, opened: list[RawWorker], name: str
) -> tuple[RawWorker, str]:
    worker = await RawWorker.connect(lk)
    opened.append(worker)
    worker_id = (await worker.register(name)).worker_id
    return worker, worker_id


async def first_offer(*candidates: RawWorker, timeout: float = 5.0) -> tuple[RawWorker, Any]:
    """The worker that gets an AvailabilityRequest first, and the job offered."""
    async def wait(w: RawWorker) -> tuple[RawWorker, Any]:
        while True:
            msg = await w.recv(timeout)
            if msg.HasField("availability"):
                return w, msg.availability.job

    tasks = [asyncio.ensure_future(wait(w)) for w in candidates]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return next(iter(done)).result()


def settled_outcome(state: dict[str, Any], dispatch_id: str) -> str | None:
    """The dispatch's outcome once its launch finished, else None."""
    outcome = next(d["outcome"] for d in state["dispatches"] if d["id"] == dispatch_id)
    return None if outcome == "launching" else str(outcome)


def job_by_id(state: dict[str, Any], job_id: str) -> dict[str, Any]:
    return next(j for j in state["jobs"] if j["id"] == job_id)


def room_in(state: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((r for r in state["rooms"] if r["name"] == name), None)


async def dispatch(
    lk: DevLiveKit, room: str, name: str, metadata: str = ""
) -> api.AgentDispatch:
    async with client(lk) as lkapi:
        req = api.CreateAgentDispatchRequest(agent_name=name, room=room, metadata=metadata)
        return await lkapi.agent_dispatch.create_dispatch(req)


async def offer_to_one_of_two(
    lk: DevLiveKit, opened: list[RawWorker]
) -> tuple[RawWorker, RawWorker, Any]:
    """Two workers under one agent name, and a dispatch to it: the worker offered the job
    first, the other one, and the job."""
    name = agent_name()
    a, _ = await new_worker(lk, opened, name)
    b, _ = await new_worker(lk, opened, name)
    await dispatch(lk, room_name(), name)
    first, job = await first_offer(a, b)
    return first, b if first is a else a, job


# ------------------------------------------------------------------------- HTTP and Twirp


def test_root_answers_ok(lk: DevLiveKit) -> None:
    with urllib.request.urlopen(lk.http_url + "/", timeout=5) as resp:
        assert resp.status == 200
        assert resp.read() == b"OK"


async def test_rooms_create_list_delete(lk: DevLiveKit) -> None:
    name = room_name()
    async with client(lk) as lkapi:
        room = await lkapi.room.create_room(api.CreateRoomRequest(name=name, metadata="m"))
        assert room.sid.startswith("RM_") and room.name == name and room.metadata == "m"
        again = await lkapi.room.create_room(api.CreateRoomRequest(name=name))
        assert again.sid == room.sid  # CreateRoom returns the existing room
        listed = await lkapi.room.list_rooms(api.ListRoomsRequest(names=[name]))
        assert [r.sid for r in listed.rooms] == [room.sid]
        await lkapi.room.delete_room(api.DeleteRoomRequest(room=name))
        assert not (await lkapi.room.list_rooms(api.ListRoomsRequest(names=[name]))).rooms
        with pytest.raises(api.TwirpError) as err:
            await lkapi.room.delete_room(api.DeleteRoomRequest(room=name))
        assert (err.value.code, err.value.status) == ("not_found", 404)
        # the room store answers an empty list for a room it does not know
        participants = await lkapi.room.list_participants(api.ListParticipantsRequest(room=name))
        assert not participants.participants


async def test_wrong_secret_is_a_plain_401_like_the_real_server(lk: DevLiveKit) -> None:
    async with client(lk, secret="not-the-secret") as lkapi:
        with pytest.raises(api.TwirpError) as err:
            await lkapi.room.list_rooms(api.ListRoomsRequest())
    # the real auth middleware answers 401 with a text body: livekit-api reports code "unknown"
    assert (err.value.status, err.value.code) == (401, "unknown")


async def test_unknown_api_key_is_a_plain_401(lk: DevLiveKit) -> None:
    async with client(lk, key="nokey") as lkapi:
        with pytest.raises(api.TwirpError) as err:
            await lkapi.room.create_room(api.CreateRoomRequest(name=room_name()))
    assert err.value.status == 401


async def test_missing_grant_is_twirp_unauthenticated(lk: DevLiveKit) -> None:
    token = admin_token(lk, api.VideoGrants(room_create=True))  # but not roomList
    async with api.LiveKitAPI.with_token(token, lk.url) as lkapi:
        with pytest.raises(api.TwirpError) as err:
            await lkapi.room.list_rooms(api.ListRoomsRequest())
    assert (err.value.code, err.value.status, err.value.message) == (
        "unauthenticated",
        401,
        "permissions denied",
    )
    wrong_room = admin_token(lk, api.VideoGrants(room_admin=True, room="other"))
    async with api.LiveKitAPI.with_token(wrong_room, lk.url) as lkapi:
        with pytest.raises(api.TwirpError) as err:
            await lkapi.agent_dispatch.list_dispatch("mine")
    assert err.value.code == "unauthenticated"


async def test_missing_token_is_twirp_unauthenticated(lk: DevLiveKit) -> None:
    url = f"{lk.http_url}/twirp/livekit.RoomService/ListRooms"
    async with aiohttp.ClientSession() as http:
        headers = {"Content-Type": "application/protobuf"}
        async with http.post(url, data=b"", headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["Content-Type"] == "application/json"
            assert (await resp.json())["code"] == "unauthenticated"


async def test_json_bodies_work(lk: DevLiveKit) -> None:
    name = room_name()
    token = admin_token(lk, api.VideoGrants(room_create=True, room_list=True))
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{lk.http_url}/twirp/livekit.RoomService"
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{base}/CreateRoom", json={"name": name, "max_participants": 3}) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            room = await r.json()
        assert room["name"] == name and room["sid"].startswith("RM_")
        assert room["max_participants"] == 3
        async with http.post(f"{base}/ListRooms", json={"names": [name]}) as r:
            assert [x["sid"] for x in (await r.json())["rooms"]] == [room["sid"]]
        # the JS SDK's camelCase names and its Content-Type parameter are accepted too
        js = {**headers, "Content-Type": "application/json;charset=UTF-8"}
        async with http.post(f"{base}/CreateRoom", data=json.dumps(
                {"name": name + "-js", "maxParticipants": 4}), headers=js) as r:
            assert r.status == 200 and (await r.json())["max_participants"] == 4


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
    lk: DevLiveKit,
    method: str,
    path: str,
    content_type: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    token = admin_token(lk, api.VideoGrants(room_list=True))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    async with aiohttp.ClientSession() as http:
        url = f"{lk.http_url}/twirp/{path}"
        async with http.request(method, url, data=body, headers=headers) as resp:
            assert resp.status == status
            # exactly this: the JS server SDK reads the error code only then
            assert resp.headers["Content-Type"] == "application/json"
            assert (await resp.json())["code"] == code


async def test_twirp_error_bodies_are_exactly_application_json(quick: DevLiveKit) -> None:
    """not_found, unauthenticated, unavailable: the raw header, as Go's twirp writes it."""
    admin = admin_token(quick, api.VideoGrants(room_create=True, room_admin=True, room="gone"))
    base = f"{quick.http_url}/twirp"
    cases = [
        ("livekit.RoomService/DeleteRoom", {"room": "gone"}, admin, 404, "not_found"),
        ("livekit.RoomService/ListRooms", {}, admin, 401, "unauthenticated"),
        ("livekit.AgentDispatchService/ListDispatch", {"room": "gone"}, admin, 503,
         "unavailable"),
    ]
    async with aiohttp.ClientSession() as http:
        for path, body, token, status, code in cases:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(f"{base}/{path}", json=body, headers=headers) as resp:
                assert (resp.status, resp.headers["Content-Type"]) == (
                    status, "application/json"), path
                doc = await resp.json(content_type=None)
                assert doc["code"] == code and doc["msg"], path


def run_server_sdk(lk: DevLiveKit, spec: dict[str, Any]) -> dict[str, Any]:
    """tests/web/server_sdk.mjs: the npm livekit-server-sdk against the server; its JSON."""
    if not (SERVER_SDK.exists() and shutil.which("node")):
        pytest.fail("node or tests/web/node_modules/livekit-server-sdk missing: make install-test")
    spec = {"url": lk.http_url, "api_key": lk.api_key, "api_secret": lk.api_secret, **spec}
    proc = subprocess.run(["node", str(SDK_SCRIPT)], input=json.dumps(spec),
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"server_sdk.mjs exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return dict(json.loads(proc.stdout))


def test_npm_server_sdk_reads_the_twirp_error_codes(lk: DevLiveKit) -> None:
    name = room_name()
    out = run_server_sdk(lk, {"room": name})
    results = out["results"]
    assert results["createRoom"]["ok"] and results["createRoom"]["value"]["name"] == name
    assert results["listRooms"]["value"] == [name]
    assert results["deleteRoom"]["ok"]
    missing = results["deleteMissingRoom"]
    assert (missing["ok"], missing["code"], missing["status"]) == (False, "not_found", 404)
    no_grant = results["listRoomsWithoutGrant"]
    assert (no_grant["ok"], no_grant["code"], no_grant["status"]) == (
        False, "unauthenticated", 401)
    assert no_grant["message"] == "permissions denied"


async def test_dispatch_api_creates_the_room_and_its_default_dispatch(quick: DevLiveKit) -> None:
    name, agent = room_name(), agent_name()
    created = await dispatch(quick, name, agent, metadata='{"k": 1}')
    assert created.id.startswith("AD_") and created.agent_name == agent
    assert created.room == name and created.metadata == '{"k": 1}'
    async with client(quick) as lkapi:
        assert (await lkapi.room.list_rooms(api.ListRoomsRequest(names=[name]))).rooms
        listed = await lkapi.agent_dispatch.list_dispatch(name)
        # a new room carries the real server's default dispatch for unnamed workers
        assert sorted(d.agent_name for d in listed) == ["", agent]
        assert (await lkapi.agent_dispatch.get_dispatch(created.id, name)).id == created.id
        deleted = await lkapi.agent_dispatch.delete_dispatch(created.id, name)
        assert deleted.state.deleted_at > 0
        assert [d.agent_name for d in await lkapi.agent_dispatch.list_dispatch(name)] == [""]
        with pytest.raises(api.TwirpError) as err:
            await lkapi.agent_dispatch.delete_dispatch(created.id, name)
        assert err.value.code == "not_found"
        # a dispatch call on a missing room gets no answer from any node: unavailable
        with pytest.raises(api.TwirpError) as err:
            await lkapi.agent_dispatch.list_dispatch(room_name())
        assert (err.value.code, err.value.status) == ("unavailable", 503)


async def test_state_file_follows_changes(lk: DevLiveKit) -> None:
    name = room_name()
    async with client(lk) as lkapi:
        await lkapi.room.create_room(api.CreateRoomRequest(name=name))
    state_file = Path(lk.proc.args[lk.proc.args.index("--state-file") + 1])
    state = json.loads(state_file.read_text())
    assert name in [r["name"] for r in state["rooms"]]


async def test_rtc_v1_is_404_so_sdks_fall_back_and_rtc_validates_tokens(lk: DevLiveKit) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{lk.http_url}/rtc/v1/validate") as resp:
            assert resp.status == 404 and resp.headers["Access-Control-Allow-Origin"] == "*"
        good = join_token(lk, "validated", "v")
        async with http.get(f"{lk.http_url}/rtc/validate?access_token={good}") as resp:
            assert resp.status == 200
        bad = admin_token(lk, api.VideoGrants(room_list=True))
        async with http.get(f"{lk.http_url}/rtc/validate?access_token={bad}") as resp:
            assert resp.status == 401 and "roomJoin" in await resp.text()
    assert good not in lk.logs()  # query strings carry tokens: never logged


async def test_agent_endpoint_requires_websocket_and_agent_grant(lk: DevLiveKit) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{lk.http_url}/agent") as resp:
            assert resp.status == 404
        for token in ("", admin_token(lk, api.VideoGrants(room_admin=True, room="r"))):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(f"{lk.url}/agent", headers=headers)
            assert err.value.status == 401


# ------------------------------------------------------------------- worker protocol


async def test_worker_registers_and_pongs(lk: DevLiveKit, workers: list[RawWorker]) -> None:
    name = agent_name()
    worker, worker_id = await new_worker(lk, workers, name)
    assert worker_id.startswith("AW_")
    await worker.send(agent_pb.WorkerMessage(ping=agent_pb.WorkerPing(timestamp=1234)))
    pong = (await worker.recv()).pong
    assert pong.last_timestamp == 1234 and pong.timestamp > 0
    entry = next(w for w in lk.state()["workers"] if w["id"] == worker_id)
    assert (entry["agent_name"], entry["status"], entry["version"]) == (name, "available", "t")


@pytest.mark.parametrize("offence", ["before_register", "second_register", "unreadable"])
async def test_protocol_violations_close_the_worker_socket(
    lk: DevLiveKit, workers: list[RawWorker], offence: str
) -> None:
    name = agent_name()
    worker = await RawWorker.connect(lk)
    workers.append(worker)
    if offence == "before_register":
        await worker.send(agent_pb.WorkerMessage(ping=agent_pb.WorkerPing(timestamp=1)))
    elif offence == "second_register":
        await worker.register(name)
        req = agent_pb.RegisterWorkerRequest(type=agent_pb.JT_ROOM, agent_name=name)
        await worker.send(agent_pb.WorkerMessage(register=req))
    else:
        await worker.register(name)
        await worker.ws.send_bytes(b"\xff\xff\xff not a protobuf")
    await asyncio.wait_for(worker.closed.wait(), 5)
    assert worker.inbox.empty()  # no pong, no second RegisterWorkerResponse
    assert worker.close_code is not None and worker.close_code != 1000
    await lk.until(lambda s: all(w["agent_name"] != name for w in s["workers"]), timeout=5)


async def test_dispatch_is_offered_and_assigned(
    lk: DevLiveKit, workers: list[RawWorker]
) -> None:
    name, room = agent_name(), room_name()
    worker, worker_id = await new_worker(lk, workers, name)
    created = await dispatch(lk, room, name, metadata="hello")
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
    claims = api.TokenVerifier(lk.api_key, lk.api_secret).verify(assignment.token)
    assert (claims.identity, claims.kind) == ("agent-me", "agent")
    assert claims.video.room_join and claims.video.agent and claims.video.room == room
    assert claims.attributes["lk.agent_name"] == name
    assert job_by_id(lk.state(), job.id)["state"] == "accepted"

    running = agent_pb.UpdateJobStatus(job_id=job.id, status=agent_pb.JS_RUNNING)
    await worker.send(agent_pb.WorkerMessage(update_job=running))
    await lk.until(lambda s: job_by_id(s, job.id)["state"] == "running", timeout=5)
    async with client(lk) as lkapi:
        listed = await lkapi.agent_dispatch.get_dispatch(created.id, room)
    assert [j.id for j in listed.state.jobs] == [job.id]
    assert listed.state.jobs[0].state.participant_identity == "agent-me"
    assert listed.state.jobs[0].state.worker_id == worker_id

    done = agent_pb.UpdateJobStatus(job_id=job.id, status=agent_pb.JS_SUCCESS)
    await worker.send(agent_pb.WorkerMessage(update_job=done))
    await lk.until(lambda s: job_by_id(s, job.id)["state"] == "success", timeout=5)


async def test_declined_job_goes_to_the_other_worker(
    lk: DevLiveKit, workers: list[RawWorker]
) -> None:
    first, second, job = await offer_to_one_of_two(lk, workers)
    await first.answer(job, available=False)
    offered = (await second.recv()).availability.job
    assert offered.id == job.id
    await second.answer(offered, available=True, identity="second")
    assert (await second.recv()).assignment.job.id == job.id
    record = job_by_id(lk.state(), job.id)
    assert record["worker_id"] == second.worker_id and record["state"] == "accepted"
    assert record["attempts"] == [
        {"worker_id": first.worker_id, "outcome": "declined"},
        {"worker_id": second.worker_id, "outcome": "accepted"},
    ]


async def test_jobs_go_at_random_weighted_by_spare_capacity(
    lk: DevLiveKit, workers: list[RawWorker]
) -> None:
    """Loads 0.1 and 0.6: weights 0.9 and 0.4, so the light worker gets about 69 %.

    Over 120 dispatches the light worker's count is Binomial(120, 0.69): mean 83, sd 5.1.
    "Both get jobs and the light one more than half" fails by chance with p < 1e-5 (the
    light count would have to fall 4.4 sd low); a rule of "least loaded always" (heavy gets
    none), "most loaded first" (the old fake's) or uniform choice (mean 60) fails it.
    """
    name, room, rounds = agent_name(), room_name(), 120
    light, _ = await new_worker(lk, workers, name)
    heavy, _ = await new_worker(lk, workers, name)
    await light.report(0.1)
    await heavy.report(0.6)
    await lk.until(lambda s: sorted(w["load"] for w in s["workers"] if w["agent_name"] == name)
                == [0.1, 0.6], timeout=5)
    counts = {light.worker_id: 0, heavy.worker_id: 0}

    async def serve(w: RawWorker) -> None:
        while True:
            msg = await w.recv(timeout=30)
            if msg.HasField("availability"):
                counts[w.worker_id] += 1
                await w.answer(msg.availability.job, available=True)

    servers = [asyncio.ensure_future(serve(w)) for w in (light, heavy)]
    try:
        async with client(lk) as lkapi:
            for _ in range(rounds):
                await lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=name, room=room))
        await lk.until(lambda s: sum(1 for j in s["jobs"] if j["agent_name"] == name
                                  and j["state"] == "accepted") == rounds, timeout=30)
    finally:
        for task in servers:
            task.cancel()
        await asyncio.gather(*servers, return_exceptions=True)
    assert sum(counts.values()) == rounds  # each job offered once: nobody declined
    assert counts[heavy.worker_id] > 0, counts
    assert rounds // 2 < counts[light.worker_id] < rounds, counts


async def test_no_job_is_offered_when_every_worker_is_at_target_load(
    lk: DevLiveKit, workers: list[RawWorker]
) -> None:
    name = agent_name()
    busy, _ = await new_worker(lk, workers, name)
    busier, _ = await new_worker(lk, workers, name)
    await busy.report(0.7)  # still "available" by its own threshold
    await busier.report(0.95)
    await lk.until(lambda s: sorted(w["load"] for w in s["workers"] if w["agent_name"] == name)
                == [0.7, 0.95], timeout=5)
    created = await dispatch(lk, room_name(), name)
    assert await lk.until(lambda s: settled_outcome(s, created.id)) == "no_worker"
    state = lk.state()
    assert [j for j in state["jobs"] if j["dispatch_id"] == created.id] == []
    assert busy.inbox.empty() and busier.inbox.empty()  # nothing was offered
    assert "no servers available" in lk.logs()

    await busy.report(0.69)  # below the target load it is offered the next one
    await lk.until(lambda s: any(w["load"] == 0.69 for w in s["workers"]), timeout=5)
    again = await dispatch(lk, room_name(), name)
    offered = (await busy.recv()).availability.job
    assert offered.dispatch_id == again.id


async def test_full_worker_is_not_offered_jobs(lk: DevLiveKit, workers: list[RawWorker]) -> None:
    name, room = agent_name(), room_name()
    worker, _ = await new_worker(lk, workers, name)
    await worker.report(0.2, status=agent_pb.WS_FULL)
    await lk.until(lambda s: any(w["status"] == "full" for w in s["workers"]), timeout=5)
    created = await dispatch(lk, room, name)
    assert await lk.until(lambda s: settled_outcome(s, created.id)) == "no_worker"
    assert worker.inbox.empty()


async def next_worker_takes_it(dev: DevLiveKit, other: RawWorker, job, first: RawWorker,
                               first_outcome: str) -> None:
    """The job, given up by `first`, is offered to `other`, which accepts it."""
    offered = (await other.recv(timeout=5)).availability.job
    assert offered.id == job.id
    await other.answer(offered, available=True)
    assert (await other.recv()).assignment.job.id == job.id
    assert job_by_id(dev.state(), job.id)["attempts"] == [
        {"worker_id": first.worker_id, "outcome": first_outcome},
        {"worker_id": other.worker_id, "outcome": "accepted"},
    ]


async def test_unanswered_offer_goes_to_the_next_worker(
    quick: DevLiveKit, workers: list[RawWorker]
) -> None:
    silent, other, job = await offer_to_one_of_two(quick, workers)  # silent never answers
    await next_worker_takes_it(quick, other, job, silent, "timeout")


async def test_unanswered_offer_to_the_only_worker_times_out(
    quick: DevLiveKit, workers: list[RawWorker]
) -> None:
    name = agent_name()
    worker, _ = await new_worker(quick, workers, name)
    created = await dispatch(quick, room_name(), name)
    job = (await worker.recv()).availability.job
    await quick.until(lambda s: job_by_id(s, job.id)["state"] == "timeout", timeout=5)
    assert await quick.until(lambda s: settled_outcome(s, created.id)) == "timeout"


async def test_worker_that_disconnects_mid_offer_is_skipped(
    lk: DevLiveKit, workers: list[RawWorker]
) -> None:
    leaving, other, job = await offer_to_one_of_two(lk, workers)
    await leaving.close()
    workers.remove(leaving)
    await next_worker_takes_it(lk, other, job, leaving, "failed")


async def test_dispatch_without_worker_is_dropped_like_the_real_server(
    lk: DevLiveKit, workers: list[RawWorker]
) -> None:
    name = agent_name()
    created = await dispatch(lk, room_name(), name)
    assert await lk.until(lambda s: settled_outcome(s, created.id)) == "no_worker"
    worker, _ = await new_worker(lk, workers, name)
    await worker.send(agent_pb.WorkerMessage(ping=agent_pb.WorkerPing(timestamp=7)))
    # the pong comes, and no offer before it or after the ping was handled
    assert (await worker.recv()).pong.last_timestamp == 7
    assert worker.inbox.empty()


async def test_redispatch_on_register_is_opt_in(
    lenient: DevLiveKit, workers: list[RawWorker]
) -> None:
    name = agent_name()
    created = await dispatch(lenient, room_name(), name)
    worker, _ = await new_worker(lenient, workers, name)
    job = (await worker.recv()).availability.job
    assert job.dispatch_id == created.id


async def test_delete_dispatch_terminates_its_job(
    lk: DevLiveKit, workers: list[RawWorker]
) -> None:
    name, room = agent_name(), room_name()
    worker, _ = await new_worker(lk, workers, name)
    created = await dispatch(lk, room, name)
    job = (await worker.recv()).availability.job
    await worker.answer(job, available=True, identity="a")
    await worker.recv()  # the assignment
    async with client(lk) as lkapi:
        await lkapi.agent_dispatch.delete_dispatch(created.id, room)
    assert (await worker.recv()).termination.job_id == job.id
    record = job_by_id(lk.state(), job.id)
    assert (record["state"], record["terminated"]) == ("success", True)


async def test_worker_speaking_json_text_gets_json(lk: DevLiveKit) -> None:
    token = admin_token(lk, api.VideoGrants(agent=True))
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.ws_connect(f"{lk.url}/agent", headers=headers) as ws:
            await ws.send_str(json.dumps({"register": {"type": "JT_ROOM", "agentName": "j"}}))
            reply = json.loads(await ws.receive_str(timeout=5))
    assert reply["register"]["workerId"].startswith("AW_")


# ------------------------------------------------------------------ rooms and their lifetime


async def test_a_room_nobody_joins_closes_after_empty_timeout_with_its_dispatches(
    quick: DevLiveKit, workers: list[RawWorker]
) -> None:
    name, agent = room_name(), agent_name()
    worker, _ = await new_worker(quick, workers, agent)
    await dispatch(quick, name, agent)
    job = (await worker.recv()).availability.job
    await worker.answer(job, available=True)
    await worker.recv()  # the assignment: a running job does not keep the room open either
    assert room_in(quick.state(), name)["closes_at"] is not None
    await quick.until(lambda s: room_in(s, name) is None, timeout=10)
    closed = next(r for r in quick.state()["closed_rooms"] if r["name"] == name)
    assert closed["reason"] == "ROOM_CLOSED"
    assert (await worker.recv()).termination.job_id == job.id  # its dispatch went with it
    async with client(quick) as lkapi:
        with pytest.raises(api.TwirpError) as err:
            await lkapi.agent_dispatch.list_dispatch(name)
    assert (err.value.code, err.value.status) == ("unavailable", 503)


async def test_a_room_closes_after_its_last_participant_left(quick: DevLiveKit) -> None:
    name = room_name()
    await dispatch(quick, name, agent_name())
    caller = rtc.Room()
    await caller.connect(quick.url, join_token(quick, name, "caller"))
    try:
        room = await quick.until(lambda s: room_in(s, name), timeout=5)
        assert [p["identity"] for p in room["participants"]] == ["caller"]
        assert room["participants"][0]["kind"] == "standard"
        assert room["closes_at"] is None  # a participant keeps it open ...
        await asyncio.sleep(EMPTY_TIMEOUT * 1.5)
        assert room_in(quick.state(), name) is not None  # ... past the empty timeout
        leaving_at = time.time()
    finally:
        await caller.disconnect()
    left = await quick.until(lambda s: (r := room_in(s, name)) and not r["participants"] and r,
                             timeout=5)
    # the departure timer runs, not the (shorter) empty one: it was set after the leave
    assert left["closes_at"] >= leaving_at + DEPARTURE_TIMEOUT
    await quick.until(lambda s: room_in(s, name) is None, timeout=10)
    async with client(quick) as lkapi:
        with pytest.raises(api.TwirpError) as err:
            await lkapi.agent_dispatch.list_dispatch(name)
        assert (err.value.code, err.value.status) == ("unavailable", 503)
        assert not (await lkapi.room.list_rooms(api.ListRoomsRequest(names=[name]))).rooms


async def test_an_agent_alone_does_not_keep_a_room_open(quick: DevLiveKit) -> None:
    name = room_name()
    agent = rtc.Room()
    disconnected = asyncio.Event()
    agent.on("disconnected", lambda *_: disconnected.set())
    await agent.connect(quick.url, join_token(quick, name, "agent-x", kind="agent"))
    try:
        room = await quick.until(lambda s: room_in(s, name), timeout=5)
        assert [(p["identity"], p["kind"]) for p in room["participants"]] == [
            ("agent-x", "agent")]
        assert room["closes_at"] is not None
        await quick.until(lambda s: room_in(s, name) is None, timeout=10)
        await asyncio.wait_for(disconnected.wait(), 10)  # the server sent it away
    finally:
        await agent.disconnect()
    closed = next(r for r in quick.state()["closed_rooms"] if r["name"] == name)
    assert closed["reason"] == "ROOM_CLOSED"


async def test_delete_room_removes_its_participants(lk: DevLiveKit) -> None:
    name = room_name()
    caller = rtc.Room()
    disconnected = asyncio.Event()
    caller.on("disconnected", lambda *_: disconnected.set())
    await caller.connect(lk.url, join_token(lk, name, "caller"))
    try:
        async with client(lk) as lkapi:
            listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=name))
            assert [p.identity for p in listed.participants] == ["caller"]
            await lkapi.room.delete_room(api.DeleteRoomRequest(room=name))
        await asyncio.wait_for(disconnected.wait(), 10)
    finally:
        await caller.disconnect()
    assert room_in(lk.state(), name) is None


# ------------------------------------------------------------------------ the process


def run_server(args: list[str], env: dict[str, str] | None = None,
               timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEV_SERVER_CMD, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env or dict(os.environ))


async def can_list_rooms(lk: DevLiveKit, key: str, secret: str) -> bool:
    async with api.LiveKitAPI(lk.url, key, secret) as lkapi:
        try:
            await lkapi.room.list_rooms(api.ListRoomsRequest())
        except api.TwirpError as exc:
            assert exc.status == 401
            return False
    return True


async def test_dev_keys_unless_keys_are_given_and_livekit_api_key_is_ignored(
    tmp_path: Path,
) -> None:
    ignored = {"LIVEKIT_API_KEY": "envkey", "LIVEKIT_API_SECRET": "envsecret-0123456789abcdef"}
    with start_dev_livekit(env=ignored, log_path=tmp_path / "a.log") as lk:
        assert await can_list_rooms(lk, "devkey", "secret")
        assert not await can_list_rooms(lk, "envkey", "envsecret-0123456789abcdef")
    given = ("mykey", "my-secret-0123456789abcdef0123456789")
    with start_dev_livekit(api_key=given[0], api_secret=given[1], env=ignored,
                           log_path=tmp_path / "b.log") as lk:
        assert await can_list_rooms(lk, *given)
        assert not await can_list_rooms(lk, "devkey", "secret")
        assert given[1] not in lk.logs()
    with start_dev_livekit(extra_args=["--keys", "argkey: argsecret-0123456789abcdef"],
                           log_path=tmp_path / "c.log") as lk:
        assert await can_list_rooms(lk, "argkey", "argsecret-0123456789abcdef")
        assert not await can_list_rooms(lk, "devkey", "secret")


@pytest.mark.parametrize("bad", ["no-colon-here", "key:", ": secret-only"])
def test_bad_livekit_keys_is_a_one_line_error(bad: str) -> None:
    env = dict(os.environ, LIVEKIT_KEYS=bad)
    result = run_server(["--port", str(free_port())], env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "LIVEKIT_KEYS" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


async def test_sigterm_with_a_worker_connected_exits_0(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([*DEV_SERVER_CMD, "--port", str(port)], cwd=REPO,
                                stdout=log_file, stderr=log_file)
    handle = DevLiveKit(proc, "127.0.0.1", port, "devkey", "secret", log_path)
    try:
        assert wait_ready(handle, 15), handle.logs()
        worker = await RawWorker.connect(handle)
        try:
            await worker.register("held")
            handle.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(worker.closed.wait(), 5)  # the server closed it
        finally:
            await worker.close()
        assert proc.wait(5) == 0, handle.logs()
    finally:
        handle.stop()


def test_port_in_use_exits_1(lk: DevLiveKit) -> None:
    result = run_server(["--port", str(lk.port)])
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


# ----------------------------------------------------------- a real livekit-agents worker


@pytest.fixture
def real_worker(lk: DevLiveKit, tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """`python -m livekit.agents start tests/fakes/worker_app.py` against the dev server."""
    name, http_port = agent_name(), free_port()
    env = dict(
        os.environ,
        **lk.env(),
        FAKE_AGENT_NAME=name,
        FAKE_AGENT_HTTP_PORT=str(http_port),
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "livekit.agents", "start", str(WORKER_APP)],
            cwd=REPO,
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
async def test_real_worker_registers_accepts_a_dispatch_and_joins_the_room(
    lk: DevLiveKit, real_worker: tuple[str, int, Path]
) -> None:
    name, http_port, log_path = real_worker
    worker = await lk.until(
        lambda s: next((w for w in s["workers"] if w["agent_name"] == name), None), timeout=45
    )
    assert worker["version"] and worker["status"] == "available", log_path.read_text()
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/worker", timeout=5) as resp:
        info = json.loads(resp.read())
    assert (info["agent_name"], info["worker_type"]) == (name, "JT_ROOM")

    room = room_name()
    created = await dispatch(lk, room, name)
    job = await lk.until(
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
    assert job["worker_id"] == worker["id"] and job["participant_identity"]
    # the job process joins the room with the assigned token: ctx.connect() succeeds
    joined = await lk.until(
        lambda s: next((p for p in (room_in(s, room) or {}).get("participants", [])
                        if p["identity"] == job["participant_identity"]), None),
        timeout=20,
    )
    assert joined["kind"] == "agent"
    assert joined["attributes"]["lk.agent_name"] == name
    await lk.until(lambda s: job_by_id(s, job["id"])["state"] == "running", timeout=10)
