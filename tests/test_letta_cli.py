"""`voicectl install letta`, `voicectl letta agents|create`; managed and external Letta status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.ports import free_port
from tests.support.project import REPO, new_project


def _run(stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("LETTA_", "OPENAI_"))}
    full.update(VOICECTL_HOME=str(stack.state_dir), PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "voicectl.cli", *args], cwd=stack.state_dir,
                          env=full, capture_output=True, text=True, timeout=300)


def test_create_and_list_voice_agents(managed_letta):
    res = _run(managed_letta, "letta", "create", "cli-voice", "--json")
    assert res.returncode == 0, res.stderr
    created = json.loads(res.stdout)
    assert created["name"] == "cli-voice" and created["sleeptime"] is True
    assert created["model"] == "openai-proxy/gpt-5-mini"
    assert set(created["blocks"]) >= {"persona", "human"}
    listed = json.loads(_run(managed_letta, "letta", "agents", "--json").stdout)
    assert created["id"] in {a["id"] for a in listed}
    human = _run(managed_letta, "letta", "agents", env={"LETTA_AGENT_NAME": "cli-voice",
                                                        "COLUMNS": "200"})
    assert "cli-voice" in human.stdout and "*" in human.stdout


def test_status_reports_managed_services(managed_letta):
    rows = {r["name"]: r for r in json.loads(_run(managed_letta, "status", "--json").stdout)}
    assert rows["postgres"]["state"] == "running"
    assert rows["letta"]["state"] == "running"
    assert rows["letta"]["health"] == "letta 0.16.8 healthy"
    assert rows["letta"]["ports"] == [managed_letta.port]


def test_install_letta_skips_what_is_done(managed_letta):
    res = _run(managed_letta, "install", "letta")
    assert res.returncode == 0, res.stderr
    assert "already installed" in res.stderr


def test_external_letta_is_only_health_checked(tmp_path):
    proj = new_project(tmp_path)
    port = free_port()
    proj.env["LETTA_SERVER_URL"] = "https://letta.example.com"
    rows = {r["name"]: r for r in json.loads(proj.run("status", "--json").stdout)}
    assert "postgres" not in rows
    assert rows["letta"]["external"] is True
    assert rows["letta"]["health"].startswith("external: ")
    res = proj.run("install", "letta")
    assert res.returncode == 2 and "external" in res.stderr
    proj.env["LETTA_SERVER_URL"] = f"http://127.0.0.1:{port}"
    proj.env["LETTA_MODE"] = "external"
    res = proj.run("letta", "agents")
    assert res.returncode == 1
    assert res.stderr.startswith("voicectl: error: letta: ") and "Traceback" not in res.stderr
