"""up, down, restart and status with real subprocesses and stand-in service commands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import psutil
import pytest

from tests.support.ports import free_port
from tests.support.project import (
    pids_alive,
    processes_matching,
    service_ports_env,
    standin_cmd,
    wait_for,
)
from voicectl.supervise.records import ServiceRecord, write_record


@pytest.fixture
def project(make_project, tmp_path):
    """Livekit and letta replaced by stand-ins on free ports; the agent left out."""
    proj = make_project(stop_at_end=True)
    lk, letta, agent = free_port(), free_port(), free_port()
    proj.ports = {"livekit": lk, "letta": letta, "agent": agent}
    proj.crash_file = tmp_path / "crash-once"
    proj.crash_always = tmp_path / "crash-always"
    proj.write_env(
        **service_ports_env(lk, letta, agent),
        VOICECTL_LIVEKIT_CMD=standin_cmd(
            lk, "--crash-file", str(proj.crash_file),
            "--crash-always-file", str(proj.crash_always), "--children", "2",
        ),
        VOICECTL_LETTA_CMD=standin_cmd(letta),
        VOICECTL_RESTART_BACKOFF_SECONDS="0.2",
        VOICECTL_MAX_FAST_CRASHES="3",
        VOICECTL_STOP_GRACE_SECONDS="3",
    )
    return proj


def test_up_status_down(project):
    up = project.run("up", "livekit", "letta", check=True)
    assert "livekit" in up.stderr and "ws://127.0.0.1" in up.stderr
    st = project.status()
    for name in ("livekit", "letta"):
        assert st[name]["state"] == "running", st[name]
        assert st[name]["pid"] and st[name]["restarts"] == 0
        assert st[name]["memory_bytes"] > 0
    assert st["agent"]["state"] == "stopped"
    assert st["livekit"]["ports"] == [project.ports["livekit"]]
    pids = [st["livekit"]["pid"], st["letta"]["pid"]]
    human = project.run("status", check=True).stdout
    assert re.search(r"livekit\s+running\s+\d+", human)

    down = project.run("down", check=True)
    assert "stopped" in down.stderr
    assert pids_alive(pids) == []
    assert all(row["state"] == "stopped" for row in project.status().values())
    assert not list((project.home / "run").glob("*.json"))


def test_up_leaves_running_service_alone_and_restart_replaces_it(project):
    project.run("up", "livekit", "letta", check=True)
    first = project.status()["livekit"]["pid"]
    again = project.run("up", "livekit", "letta", check=True)
    assert "already running" in again.stderr
    assert project.status()["livekit"]["pid"] == first

    project.run("restart", "livekit", check=True)
    st = project.status()
    assert st["livekit"]["state"] == "running"
    assert st["livekit"]["pid"] != first
    assert pids_alive([first]) == []
    assert st["letta"]["state"] == "running"


def test_crashed_service_is_restarted_and_counted(project):
    project.run("up", "livekit", check=True)
    first = project.status()["livekit"]["pid"]
    project.crash_file.touch()
    st = wait_for(
        lambda: (s := project.status()["livekit"])["restarts"] == 1
        and s["state"] == "running" and s
    )
    assert st["pid"] != first
    assert "exited with code 3" in project.log("livekit")


def test_crash_loop_gives_up_and_status_says_why(project):
    project.run("up", "livekit", check=True)
    project.crash_always.touch()
    st = wait_for(lambda: (s := project.status()["livekit"])["state"] == "crashed" and s)
    assert "gave up" in st["health"] and "exit code 3" in st["health"]
    assert st["restarts"] == 2  # three runs crashed fast: the first and two restarts
    assert st["pid"] is None
    # a later `up` starts it afresh once the cause is gone
    project.crash_always.unlink()
    project.run("up", "livekit", check=True)
    assert project.status()["livekit"]["state"] == "running"


def test_failed_start_reports_reason_and_log_tail(project):
    project.crash_always.touch()
    res = project.run("up", "livekit")
    assert res.returncode == 1
    assert "livekit failed to start" in res.stderr
    assert "crash-always file present at start" in res.stderr  # the log tail
    assert "Traceback" not in res.stderr
    assert project.status()["livekit"]["state"] == "stopped"


def test_port_held_by_foreign_process_is_refused_with_its_name(project):
    port = project.ports["livekit"]
    holder = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: any(c.laddr.port == port for c in psutil.net_connections("tcp")
                             if c.status == psutil.CONN_LISTEN))
        res = project.run("up", "livekit")
        assert res.returncode == 1
        line = res.stderr.strip().splitlines()[-1]
        assert f"port {port} is held by pid {holder.pid} (python" in line
        assert holder.poll() is None  # the foreign process was left alone
        assert project.status()["livekit"]["state"] == "stopped"
    finally:
        holder.kill()
        holder.wait()


def test_two_concurrent_ups_start_one_of_each(project):
    procs = [project.popen("up", "livekit", "letta") for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for name in ("livekit", "letta"):
        port = project.ports[name]
        keepers = processes_matching(f"voicectl.supervise.keeper {name}")
        keepers = [k for k in keepers if str(project.home) in k.environ().get("VOICECTL_HOME", "")]
        assert len(keepers) == 1, keepers
        servers = processes_matching(f"standin.py --port {port}")
        assert len(servers) == 1, servers


def test_stale_pid_record_of_another_process_is_not_trusted(project):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc = psutil.Process(other.pid)
        write_record(project.home, ServiceRecord(
            name="livekit", keeper_pid=other.pid, keeper_create_time=proc.create_time() - 100,
            pid=other.pid, create_time=proc.create_time() - 100,
            cmd=["livekit-server", "--dev"], started_at=time.time() - 100, state="running",
        ))
        st = project.status()["livekit"]
        assert st["state"] == "crashed" and "stale" in st["health"]
        assert st["pid"] is None
        project.run("down", "livekit", check=True)
        assert other.poll() is None  # not ours: never signalled
        project.run("up", "livekit", check=True)
        assert project.status()["livekit"]["state"] == "running"
    finally:
        other.kill()
        other.wait()


def test_down_leaves_no_descendants_even_when_one_ignores_sigterm(project):
    lk = project.ports["livekit"]
    project.write_env(
        LIVEKIT_URL=f"ws://127.0.0.1:{lk}",
        VOICECTL_LIVEKIT_CMD=standin_cmd(lk, "--children", "2", "--stubborn-child"),
        LETTA_MODE="external",
        VOICECTL_STOP_GRACE_SECONDS="1",
    )
    project.run("up", "livekit", check=True)
    root = project.status()["livekit"]["pid"]
    tree = wait_for(lambda: len(t := psutil.Process(root).children(recursive=True)) >= 5 and t)
    pids = [root, *(p.pid for p in tree)]
    keeper = [p.pid for p in processes_matching("voicectl.supervise.keeper livekit")
              if p.environ().get("VOICECTL_HOME") == str(project.home)]
    project.run("down", "livekit", check=True)
    assert pids_alive(pids + keeper) == []


def test_agent_service_is_a_real_worker_registered_with_the_dev_livekit(project):
    lk, agent = project.ports["livekit"], project.ports["agent"]
    dev_server = f"{sys.executable} -m voicectl.livekit_dev --port {lk}"
    project.write_env(
        **service_ports_env(lk, project.ports["letta"], agent),
        VOICECTL_LIVEKIT_CMD=dev_server,
        VOICECTL_LETTA_CMD=standin_cmd(project.ports["letta"]),
    )
    project.env["PYTHONPATH"] = str(project.root.parent) + ":" + project.env["PYTHONPATH"]
    res = project.run("up", check=True, timeout=180)
    assert "letta-voice-agent" in res.stderr
    st = project.status()["agent"]
    assert st["state"] == "running", st
    assert "registered as AW_" in st["health"]
    assert project.status()["web"]["state"] == "running"  # the browser console
    from voicectl.services.probes import http_get

    status, body = http_get(f"http://127.0.0.1:{lk}/_dev/state")
    workers = json.loads(body)["workers"]
    assert [w["agent_name"] for w in workers] == ["letta-voice-agent"]
    project.run("down", check=True)
    assert project.status()["agent"]["state"] == "stopped"
