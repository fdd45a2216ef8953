"""dispatch, token, hybrid and doctor against the LiveKit dev server and a real worker."""

from __future__ import annotations

import json
import stat
import sys

import pytest
from livekit.api import TokenVerifier

from tests.support.livekit import start_dev_livekit
from tests.support.ports import free_port
from tests.support.project import new_project, service_ports_env, standin_cmd
from voicectl.logs import ttft


@pytest.fixture
def dev_livekit():
    with start_dev_livekit() as lk:
        yield lk


@pytest.fixture
def project(make_project, dev_livekit):
    return make_project({**dev_livekit.env(), "LETTA_MODE": "external"})


def test_token_is_a_valid_join_token(project, dev_livekit):
    res = project.run("token", "room-1", "--identity", "alice", "--ttl", "10m", "--json",
                      check=True)
    doc = json.loads(res.stdout)
    claims = TokenVerifier(dev_livekit.api_key, dev_livekit.api_secret).verify(doc["token"])
    assert claims.identity == "alice"
    assert claims.video.room == "room-1" and claims.video.room_join
    assert doc["url"] == dev_livekit.url
    plain = project.run("token", "room-1", "--identity", "alice", check=True).stdout.strip()
    assert plain.count(".") == 2  # just the JWT, for $(voicectl token ...)


@pytest.mark.parametrize("args", [
    ["token", "room 1", "--identity", "a"],
    ["token", "room", "--identity", "a b"],
    ["token", "room", "--identity", "a", "--ttl", "soon"],
    ["dispatch", "bad/room"],
    ["dispatch", "room", "--metadata", "{not json"],
    ["dispatch", "room", "--list", "--delete", "AD_x"],
])
def test_bad_input_is_exit_2(project, args):
    res = project.run(*args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("voicectl: error: ") and "Traceback" not in res.stderr


def test_dispatch_list_and_delete(project, dev_livekit):
    first = json.loads(project.run("dispatch", "test-room", "--metadata", '{"letta": "a1"}',
                                   "--json", check=True).stdout)
    assert first["dispatch_id"].startswith("AD_")
    assert first["room"] == "test-room" and first["agent_name"] == "letta-voice-agent"
    assert first["room_existed"] is False
    second = json.loads(project.run("dispatch", "test-room", "--agent-name", "other",
                                    "--json", check=True).stdout)
    assert second["room_existed"] is True  # the first dispatch created it
    state = dev_livekit.state()
    named = {d["agent_name"] for d in state["dispatches"]} - {""}  # "" is the automatic one
    assert named == {"letta-voice-agent", "other"}
    assert any(d.get("metadata") == '{"letta":"a1"}' for d in state["dispatches"])

    listed = json.loads(project.run("dispatch", "test-room", "--list", "--json",
                                    check=True).stdout)
    listed = [d for d in listed if d["agent_name"]]
    assert {d["dispatch_id"] for d in listed} == {first["dispatch_id"], second["dispatch_id"]}
    project.run("dispatch", "test-room", "--delete", first["dispatch_id"], check=True)
    listed = json.loads(project.run("dispatch", "test-room", "--list", "--json",
                                    check=True).stdout)
    assert [d["dispatch_id"] for d in listed if d["agent_name"]] == [second["dispatch_id"]]


def test_dispatch_create_room_reports_it(project, dev_livekit):
    doc = json.loads(project.run("dispatch", "fresh-room", "--create-room", "--json",
                                 check=True).stdout)
    assert doc["room_created"] is True and doc["room_existed"] is False
    assert "fresh-room" in {r["name"] for r in dev_livekit.state()["rooms"]}


def test_dispatch_with_wrong_secret_is_one_line(project):
    res = project.run("dispatch", "test-room", env={"LIVEKIT_API_SECRET": "wrong"})
    assert res.returncode == 1
    assert res.stderr.strip() == (
        "voicectl: error: LiveKit rejected the credentials (HTTP 401): check LIVEKIT_API_KEY "
        "and LIVEKIT_API_SECRET"
    )


def test_dispatch_wait_fails_when_no_worker_takes_the_job(project):
    res = project.run("dispatch", "lonely-room", "--wait", "1",
                      env={"AGENT_HTTP_PORT": str(free_port())})
    assert res.returncode == 1
    assert "no worker took the job for room 'lonely-room' within 1s" in res.stderr
    assert "no agent worker is registered: nothing answers on 127.0.0.1:" in res.stderr
    assert res.stderr.count("\n") == 1, res.stderr


def test_hybrid_switch_edits_env_in_place(project):
    env_file = project.root / ".env"
    env_file.write_text("# keys\nOPENAI_API_KEY=sk-1\n# mode\nUSE_HYBRID_STREAMING=true\nX=1\n")
    res = project.run("hybrid", "off", check=True)
    assert "USE_HYBRID_STREAMING=false" in res.stdout
    assert env_file.read_text() == (
        "# keys\nOPENAI_API_KEY=sk-1\n# mode\nUSE_HYBRID_STREAMING=false\nX=1\n"
    )
    doc = json.loads(project.run("hybrid", "status", "--json", check=True).stdout)
    assert doc["env_file"] == "false" and doc["effective"] is False and doc["running"] is None
    assert "agent not running" in project.run("hybrid", check=True).stdout


def test_hybrid_creates_env_file_private(project):
    env_file = project.root / ".env"
    project.run("hybrid", "on", check=True)
    assert env_file.read_text().strip() == "USE_HYBRID_STREAMING=true"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_hybrid_refuses_when_environment_overrides(project):
    res = project.run("hybrid", "on", env={"USE_HYBRID_STREAMING": "false"})
    assert res.returncode == 2 and "overrides" in res.stderr
    assert project.run("hybrid", "maybe").returncode == 2


def test_doctor_flags_dev_keys_on_public_bind(project):
    res = project.run("doctor", "--json", env={"LIVEKIT_URL": "wss://voice.example.com"})
    assert res.returncode == 1
    checks = {c["name"]: c for c in json.loads(res.stdout)}
    assert checks["dev keys"]["status"] == "fail"
    assert "LIVEKIT_API_KEY" in checks["dev keys"]["fix"]
    assert checks["log scanner"]["status"] == ("ok" if ttft.native_scan else "warn")
    for c in checks.values():
        assert set(c) == {"name", "status", "detail", "fix"}
        assert c["status"] in ("ok", "warn", "fail")
        if c["status"] == "fail":
            assert c["fix"], c


def test_doctor_names_the_holder_of_a_port(project, dev_livekit):
    """The dev server holds the LiveKit port, and it was not started by voicectl."""
    res = project.run("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(res.stdout)}
    port = checks[f"port {dev_livekit.port}"]
    assert port["status"] == "fail"
    assert f"held by pid {dev_livekit.proc.pid} (python" in port["detail"]
    assert res.returncode == 1


def test_doctor_masks_keys(project):
    secret = "sk-live-0123456789abcdefghij"
    res = project.run("doctor", env={"OPENAI_API_KEY": secret, "COLUMNS": "200"})
    assert secret not in res.stdout + res.stderr
    assert "sk…ij" in res.stdout


# --- with a running stack: the dev server as the livekit service, a real worker --------

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    # a shared, busy machine: its CPU load often passes livekit-server's 0.7, when the
    # worker rightly gets no job (tests/test_dispatch_reasons.py covers that case)
    proj = new_project(root, VOICECTL_DEV_TARGET_LOAD="1.0")
    lk, letta, agent = free_port(), free_port(), free_port()
    proj.write_env(
        **service_ports_env(lk, letta, agent),
        VOICECTL_LIVEKIT_CMD=f"{sys.executable} -m voicectl.livekit_dev --port {lk}",
        VOICECTL_LETTA_CMD=standin_cmd(letta),
        USE_HYBRID_STREAMING="true",
        AGENT_LOAD_THRESHOLD="1.0",
    )
    proj.run("up", check=True, timeout=180)
    yield proj
    proj.run("down", timeout=60)


def test_dispatch_wait_sees_the_worker_accept(stack):
    res = stack.run("dispatch", "room-wait", "--wait", "30", "--json", check=True)
    doc = json.loads(res.stdout)
    assert doc["accepted"] is True


def test_doctor_on_a_running_stack(stack):
    res = stack.run("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(res.stdout)}
    assert checks["livekit credentials"]["status"] == "ok"
    assert checks["service agent"]["status"] == "ok"
    assert "registered as AW_" in checks["service agent"]["detail"]
    assert checks["livekit-server"]["status"] == "warn"  # replaced by VOICECTL_LIVEKIT_CMD
    bad = stack.run("doctor", "--json", env={"LIVEKIT_API_SECRET": "wrong-secret"})
    checks = {c["name"]: c for c in json.loads(bad.stdout)}
    assert checks["livekit credentials"]["status"] == "fail"
    assert bad.returncode == 1


def test_hybrid_off_restarts_agent_and_reports_its_mode(stack):
    before = stack.status()["agent"]["pid"]
    doc = json.loads(stack.run("hybrid", "status", "--json", check=True).stdout)
    assert doc["running"] is True
    doc = json.loads(stack.run("hybrid", "off", "--json", check=True, timeout=180).stdout)
    assert doc["restarted"] is True and doc["running"] is False and doc["env_file"] == "false"
    assert stack.status()["agent"]["pid"] != before
    doc = json.loads(stack.run("hybrid", "on", "--json", check=True, timeout=180).stdout)
    assert doc["running"] is True
