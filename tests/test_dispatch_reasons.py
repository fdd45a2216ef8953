"""A whole `voicectl up livekit agent` stack (embedded LiveKit dev server, real worker, a
stand-in Letta): the user's own key pair works end to end, and when no agent comes,
`dispatch --wait`, the console's dispatch and `status` say why.

The machine is shared and busy, so the stacks run the worker and the dev server at a load
limit of 1.0 unless a test forces "full" (the dev server's target load 0: every worker's
load is at or above it, so none is offered a job, as livekit-server does at 0.7).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from tests.support.ports import free_port
from tests.support.project import (
    Project,
    new_project,
    processes_matching,
    standin_cmd,
    stop_project,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)

#: a non-dev key pair: the embedded server (as `livekit-server --dev`) accepts only devkey /
#: secret unless LIVEKIT_KEYS names another pair
KEY, SECRET = "mykey", "my-own-secret-0123456789-abcdefghijklmnop"


def make_stack(root, *, target_load: str = "1.0", **extra: str) -> Project:
    proj = new_project(root, VOICECTL_DEV_TARGET_LOAD=target_load)  # read by the embedded server
    lk, letta = free_port(), free_port()
    proj.ports = {"livekit": lk, "agent": free_port(), "web": free_port()}
    proj.write_env(
        LIVEKIT_URL=f"ws://127.0.0.1:{lk}",
        LIVEKIT_API_KEY=KEY,
        LIVEKIT_API_SECRET=SECRET,
        LIVEKIT_SERVER="embedded",
        LETTA_SERVER_URL=f"http://127.0.0.1:{letta}",
        VOICECTL_LETTA_CMD=standin_cmd(letta),
        AGENT_HTTP_PORT=str(proj.ports["agent"]),
        METRICS_PORT=str(free_port()),
        WEB_PORT=str(proj.ports["web"]),
        AGENT_LOAD_THRESHOLD="1.0",
        **extra,
    )
    res = proj.run("up", "livekit", "agent", "web", timeout=200)
    if res.returncode != 0:
        proj.run("down", timeout=60)
        raise AssertionError(f"up failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n"
                             f"{proj.log('livekit')[-3000:]}\n{proj.log('agent')[-3000:]}")
    return proj


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    proj = make_stack(tmp_path_factory.mktemp("keys"))
    yield proj
    stop_project(proj)


def events(proj: Project, name: str) -> list[dict]:
    path = proj.home / "events.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if r["event"] == name]


def room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


def test_own_key_pair_registers_the_worker_and_dispatch_is_accepted(stack):
    """LIVEKIT_API_KEY / LIVEKIT_API_SECRET reach the embedded server as LIVEKIT_KEYS."""
    (registered,) = events(stack, "worker")
    assert registered["state"] == "registered" and registered["worker_id"].startswith("AW_")
    assert stack.status()["agent"]["state"] == "running"
    res = stack.run("dispatch", room(), "--wait", "30", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["accepted"] is True and doc["job_reason"] == "ok"
    # and the secret is on no command line
    for proc in processes_matching(str(stack.root)):
        assert SECRET not in " ".join(proc.cmdline())


# --- why a dispatch did not arrive -----------------------------------------------------


def dispatch(proj: Project, *args: str) -> tuple[int, dict, str]:
    res = proj.run("dispatch", *args, "--json", timeout=90)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout), res.stderr


def why_from_console(proj: Project, room_name: str, since: float) -> tuple[int, dict]:
    query = urllib.parse.urlencode({"room": room_name, "since": f"{since}"})
    url = f"http://127.0.0.1:{proj.ports['web']}/api/dispatch-why?{query}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def console_dispatch(proj: Project, room_name: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{proj.ports['web']}/api/dispatch-agent",
        data=json.dumps({"room": room_name}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_no_worker_under_that_agent_name(stack):
    code, doc, err = dispatch(stack, room(), "--agent-name", "other-agent", "--wait", "2")
    assert code == 1 and doc["accepted"] is False and doc["cause"] == "no_worker", doc
    assert err.count("\n") == 1, err
    assert "no worker took the job for room" in err and "within 2s" in err
    assert "no worker is registered under agent name 'other-agent'" in err
    assert "registered as 'letta-voice-agent'" in err
    assert doc["worker"]["agent_name"] == "letta-voice-agent"


def test_worker_declined_says_its_reason(stack):
    name = room()
    code, doc, _ = dispatch(stack, name, "--wait", "30")
    assert code == 0 and doc["accepted"] is True, doc
    # a second agent of ours for the same room: the worker refuses it
    code, doc, err = dispatch(stack, name, "--wait", "30")
    assert code == 1 and doc["cause"] == "declined", doc
    assert "the worker declined the job: agent_already_in_room" in err
    assert err.count("\n") == 1, err
    # the console's dispatch of the same room: its why names the same cause
    since = console_dispatch(stack, name)["dispatched_at"]
    status, why = why_from_console(stack, name, since - 0.001)
    deadline = time.monotonic() + 15
    while why["cause"] != "declined" and time.monotonic() < deadline:
        time.sleep(0.3)
        status, why = why_from_console(stack, name, since - 0.001)
    assert status == 200 and why["cause"] == "declined", why
    assert "agent_already_in_room" in why["why"]


def test_nothing_known_when_the_worker_had_no_chance(stack):
    """--wait 0: no answer yet, a registered worker below its limit: nothing known."""
    for _ in range(5):  # the worker may answer between the wait and the diagnosis
        code, doc, err = dispatch(stack, room(), "--wait", "0")
        if "nothing known" in doc.get("why", ""):
            break
    assert code == 1 and doc["cause"] == "unknown", doc
    assert "nothing known: worker 'letta-voice-agent' is registered" in err


def test_status_shows_worker_load_limit_and_jobs(stack):
    code, doc, _ = dispatch(stack, room(), "--wait", "30")
    assert code == 0, doc
    agent = wait_for(lambda: (row := stack.status()["agent"])["active_jobs"] and row, 20)
    assert agent["worker_agent_name"] == "letta-voice-agent"
    assert 0 <= agent["worker_load"] <= 1 and agent["load_limit"] == 1.0
    assert agent["active_jobs"] >= 1
    assert stack.status()["livekit"]["worker_load"] is None
    human = stack.run("status", env={"COLUMNS": "200"}).stdout
    assert "agent: worker 'letta-voice-agent' load " in human and "limit 1.00" in human
    assert "active job(s)" in human


def test_console_why_checks_its_input(stack):
    for query, expect in (({"since": "1"}, "missing query parameter 'room'"),
                          ({"room": "a b", "since": "1"}, "invalid room name"),
                          ({"room": "r"}, "missing query parameter 'since'"),
                          ({"room": "r", "since": "soon"}, "Unix seconds expected"),
                          ({"room": "r", "since": "1"}, "not within the last day")):
        url = (f"http://127.0.0.1:{stack.ports['web']}/api/dispatch-why?"
               f"{urllib.parse.urlencode(query)}")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=10)
        assert info.value.code == 400
        assert expect in json.loads(info.value.read())["error"]


def test_worker_at_full_load(tmp_path):
    """The dev server's target load 0: every worker is at or above it, none gets the job (as
    livekit-server at 0.7); dispatch and the console name the load and the limit."""
    proj = make_stack(tmp_path, target_load="0")
    try:
        name = room()
        code, doc, err = dispatch(proj, name, "--wait", "3")
        assert code == 1 and doc["cause"] == "full", doc
        assert "the worker is at full load: load " in err and "limit 0.00" in err
        assert "LiveKit offers no job to a worker at load >= 0" in err
        assert not events(proj, "job")  # no offer reached it
        since = console_dispatch(proj, name)["dispatched_at"]
        status, why = why_from_console(proj, name, since)
        assert status == 200 and why["cause"] == "full", why
        assert why["worker"]["load_limit"] == 0.0
    finally:
        stop_project(proj)
