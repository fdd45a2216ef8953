"""Our worker (`python -m agent start`) as a real process, registered with the LiveKit dev server.

The dev server speaks the real worker protocol and carries room media, so a job's
`ctx.connect()` joins the room: the test checks registration, VAD prewarm, the request
handler's decisions, the startup phases on record, and the agent in the room as the server
sees it. (Whole voice turns through the room are tests/test_voice_*.py's.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import api

from tests.support.livekit import DevLiveKit, start_dev_livekit
from tests.support.ports import free_port
from tests.support.project import REPO
from tests.support.worker import running_worker, worker_env

AGENT_NAME = "letta-voice-agent"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fake() -> Iterator[DevLiveKit]:
    # the machine's CPU load is real and its 2 cores are busy while the worker prewarms: the
    # 0.7 rule (tested below and in test_livekit_dev_api) must not drop these dispatches
    handle = start_dev_livekit(target_load=1.0)
    try:
        yield handle
    finally:
        handle.stop()


@contextlib.contextmanager
def run_worker(fake: DevLiveKit, tmp_path: Path, **extra: str | None
               ) -> Iterator[tuple[Path, int]]:
    """The agent worker against the dev server; yields (state dir, health port). An `extra`
    value None leaves that variable out (its default applies)."""
    home, port = tmp_path / "state", free_port()
    env = worker_env(fake, home, tmp_path / "absent.env", AGENT_HTTP_PORT=str(port), **extra)
    with running_worker(env, tmp_path / "worker.log"):
        yield home, port


@pytest.fixture
def worker(fake: DevLiveKit, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    with run_worker(fake, tmp_path) as found:
        yield found


def read(home: Path, event: str) -> list[dict]:
    path = home / "events.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == event]


def wait_for(fn, timeout: float):
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


async def dispatch(fake: DevLiveKit, room: str) -> str:
    async with api.LiveKitAPI(fake.http_url, fake.api_key, fake.api_secret) as lk:
        created = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room)
        )
    return created.id


async def test_worker_registers_and_accepts_one_job_per_room(
    fake: DevLiveKit, worker: tuple[Path, int]
) -> None:
    home, port = worker
    (registered,) = wait_for(lambda: read(home, "worker"), 60)
    assert registered["agent_name"] == AGENT_NAME
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/worker", timeout=5) as resp:
        assert json.loads(resp.read())["agent_name"] == AGENT_NAME
    vad = wait_for(lambda: read(home, "vad"), 30)
    assert all(v["loaded"] for v in vad)  # Silero loads offline in the prewarm step

    room = f"room-{uuid.uuid4().hex[:8]}"
    first = await dispatch(fake, room)
    jobs = wait_for(lambda: read(home, "job"), 10)
    assert jobs[0]["accepted"] is True and jobs[0]["room"] == room
    state = fake.wait_for(lambda s: [j for j in s["jobs"] if j["dispatch_id"] == first
                                     and j["state"] in ("accepted", "running")], timeout=10)
    assert state

    # a second agent of ours for the same room is refused
    await dispatch(fake, room)
    jobs = wait_for(lambda: [j for j in read(home, "job") if not j["accepted"]], 10)
    assert jobs[0]["reason"] == "agent_already_in_room"

    # the entrypoint connected: its phases are on record, the connect one first
    def room_phases() -> list[str]:
        return [p["phase"] for p in read(home, "startup") if p["room"] == room]

    phases = wait_for(lambda: "ctx_connected" in room_phases() and room_phases(), 20)
    assert phases[:2] == ["handshake_start", "ctx_connected"], phases
    connected = next(p for p in read(home, "startup") if p["phase"] == "ctx_connected")
    assert connected["elapsed_ms"] >= 0
    assert not [p for p in read(home, "startup") if p["phase"] == "failed"
                and p.get("stage") == "connect"]

    # and the server has our agent in the room: the accepted job's identity, kind agent
    identity = state[0]["participant_identity"]
    agent = fake.wait_for(lambda s: next(
        (p for r in s["rooms"] if r["name"] == room for p in r["participants"]
         if p["identity"] == identity), None), timeout=20)
    assert agent["kind"] == "agent"
    assert agent["attributes"]["lk.agent_name"] == AGENT_NAME


PREWARM_WITH_BROKEN_VAD = """
from livekit.agents import JobExecutorType, JobProcess
from agent import providers, worker
def broken():
    raise RuntimeError("no onnx runtime")
providers.load_vad = broken
proc = JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)
worker.prewarm(proc)
assert proc.userdata["vad"] is None, proc.userdata
print(proc.userdata["vad_error"])
"""


def test_prewarm_without_vad_says_so(tmp_path: Path) -> None:
    """A VAD that cannot load leaves the worker running without it, on record."""
    env = {**os.environ, "VOICECTL_HOME": str(tmp_path),
           "VOICECTL_ENV_FILE": str(tmp_path / "absent.env"), "PYTHONPATH": str(REPO)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    res = subprocess.run([sys.executable, "-c", PREWARM_WITH_BROKEN_VAD], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "no onnx runtime" in res.stdout
    (event,) = read(tmp_path, "vad")
    assert event["loaded"] is False and "no onnx runtime" in event["reason"]


# --- the job offer deadline: LiveKit waits ~2.8 s for an answer, then drops the offer ----


def test_offer_is_answered_in_time_when_list_participants_hangs(tmp_path: Path) -> None:
    """A LiveKit whose ListParticipants hangs (the dev server's --twirp-delay) still gets the
    worker's answer inside its availability timeout: the server records the attempt as
    accepted (a late answer it drops as "timeout"), and the `job` event records how long the
    answer took."""
    handle = start_dev_livekit(target_load=1.0,  # the machine is shared: its CPU load is real
                               extra_args=["--twirp-delay", "ListParticipants=10"])
    try:
        with run_worker(handle, tmp_path, AGENT_LOAD_THRESHOLD="1.0") as (home, _port):
            wait_for(lambda: read(home, "worker"), 60)
            room = f"room-{uuid.uuid4().hex[:8]}"
            dispatch_id = asyncio.run(dispatch(handle, room))
            (job,) = wait_for(lambda: read(home, "job"), 15)
            assert job["accepted"] is True and job["room"] == room, job
            assert job["answer_ms"] >= 0, job  # recorded; being in time is the server's verdict
            assert job["check"] == "timeout", job
            state = handle.wait_for(lambda s: [j for j in s["jobs"]
                                               if j["dispatch_id"] == dispatch_id], timeout=10)
            # the server got the answer in time: accepted, not dropped as "timeout"
            assert state[0]["state"] in ("accepted", "running"), state
            assert [a["outcome"] for a in state[0]["attempts"]] == ["accepted"], state
    finally:
        handle.stop()


# --- load: what the worker reports is what the server sees, judged at the server's 0.7 ----


def test_reported_load_reaches_the_server_and_full_means_full(tmp_path: Path) -> None:
    """With the default AGENT_LOAD_THRESHOLD the worker's own verdict agrees with the server's
    rule (no job at load >= 0.7), and the load LiveKit sees is the one the worker measured
    (livekit-agents' default: the machine's CPU over 2.5 s, on /worker as worker_load)."""
    handle = start_dev_livekit()
    try:
        with run_worker(handle, tmp_path, AGENT_LOAD_THRESHOLD=None) as (home, port):
            wait_for(lambda: read(home, "worker"), 60)
            measured: set[float] = set()
            seen: list[dict] = []
            end = time.monotonic() + 8
            while time.monotonic() < end:  # status updates go every 2.5 s, load every 0.5 s
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/worker", timeout=5) as r:
                    measured.add(round(float(json.loads(r.read()).get("worker_load", 0.0)), 4))
                seen += [w for w in handle.state()["workers"] if w["agent_name"] == AGENT_NAME]
                time.sleep(0.1)
    finally:
        handle.stop()
    reported = {w["load"] for w in seen}
    assert any(v > 0 for v in reported), seen  # a real measurement, not the initial 0
    # each load the server holds is one the worker measured (float32 on the wire)
    for load in reported - {0.0}:
        assert any(abs(load - m) < 2e-4 for m in measured), (load, sorted(measured))
    for w in seen:  # full exactly when the server would offer nothing
        assert (w["status"] == "full") == (w["load"] >= 0.7), w
