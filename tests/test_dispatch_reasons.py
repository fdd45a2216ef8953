"""A whole `voicectl up livekit agent` stack (embedded LiveKit dev server, real worker, a
stand-in Letta): the user's own key pair works end to end, and when no agent comes,
`dispatch --wait`, the console's dispatch and `status` say why.

The machine is shared and busy, so the stacks run the worker and the dev server at a load
limit of 1.0 unless a test forces "full" (the dev server's target load 0: every worker's
load is at or above it, so none is offered a job, as livekit-server does at 0.7).
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.cli_project import Project, base_env, free_port, processes_matching, standin_cmd

pytestmark = pytest.mark.timeout(240)

#: a non-dev key pair: the embedded server (as `livekit-server --dev`) accepts only devkey /
#: secret unless LIVEKIT_KEYS names another pair
KEY, SECRET = "mykey", "my-own-secret-0123456789-abcdefghijklmnop"


def make_stack(root, *, target_load: str = "1.0", **extra: str) -> Project:
    proj = Project(root, base_env(root / ".voicectl"))
    proj.env["VOICECTL_DEV_TARGET_LOAD"] = target_load  # read by the embedded server
    lk, letta = free_port(), free_port()
    proj.ports = {"livekit": lk, "agent": free_port()}
    proj.write_env(
        LIVEKIT_URL=f"ws://127.0.0.1:{lk}",
        LIVEKIT_API_KEY=KEY,
        LIVEKIT_API_SECRET=SECRET,
        LIVEKIT_SERVER="embedded",
        LETTA_SERVER_URL=f"http://127.0.0.1:{letta}",
        VOICECTL_LETTA_CMD=standin_cmd(letta),
        AGENT_HTTP_PORT=str(proj.ports["agent"]),
        METRICS_PORT=str(free_port()),
        WEB_PORT=str(free_port()),
        AGENT_LOAD_THRESHOLD="1.0",
        **extra,
    )
    res = proj.run("up", "livekit", "agent", timeout=200)
    if res.returncode != 0:
        proj.run("down", timeout=60)
        raise AssertionError(f"up failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n"
                             f"{proj.log('livekit')[-3000:]}\n{proj.log('agent')[-3000:]}")
    return proj


def stop_stack(proj: Project) -> None:
    proj.run("down", timeout=60)
    for proc in processes_matching(str(proj.root)):
        proc.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    proj = make_stack(tmp_path_factory.mktemp("keys"))
    yield proj
    stop_stack(proj)


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
