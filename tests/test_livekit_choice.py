"""Which LiveKit server runs (LIVEKIT_SERVER=auto|binary|embedded), how status, doctor and up
say so, and that the API keys reach the server in its environment, never on a command line.

A shell script named `livekit-server` stands for the Go binary: it records its argv and
LIVEKIT_KEYS, then runs the LiveKit dev server (`python -m voicectl.livekit_dev`), which takes
its keys from LIVEKIT_KEYS only (as the real `--dev` server, it ignores LIVEKIT_API_KEY /
LIVEKIT_API_SECRET).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest

from tests.support.ports import free_port
from tests.support.project import Project

KEY, SECRET = "key-under-test", "secret-under-test-0123456789abcdefXYZ"
FAKE_VERSION = "1.9.9"
SCRIPT = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "livekit-server version {version}"; exit 0; fi
printf '%s\\n' "$0" "$@" > "{record}.argv"
printf '%s' "$LIVEKIT_KEYS" > "{record}.keys"
port=7880
while [ $# -gt 0 ]; do
  if [ "$1" = "--port" ]; then port=$2; shift; fi
  shift
done
{python} -m voicectl.livekit_dev --port "$port"
"""  # no exec: the pid record keeps the script's command line, which must stay its own


def write_fake_binary(path: Path, record: Path) -> Path:
    """An executable `livekit-server` stand-in at `path`; it records to `record`.*."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SCRIPT.format(version=FAKE_VERSION, record=record, python=sys.executable))
    path.chmod(0o755)
    return path


@pytest.fixture
def project(make_project, tmp_path):
    """No livekit-server anywhere: PATH is our own bin directory and the system's."""
    proj = make_project(stop_at_end=True)
    proj.path_bin = tmp_path / "pathbin"
    proj.path_bin.mkdir()
    proj.env["PATH"] = f"{proj.path_bin}:/usr/bin:/bin"
    proj.lk_port = free_port()
    proj.write_env(LIVEKIT_URL=f"ws://127.0.0.1:{proj.lk_port}", LETTA_MODE="external",
                   LIVEKIT_API_KEY=KEY, LIVEKIT_API_SECRET=SECRET)
    return proj


def livekit_row(project: Project, **env: str) -> dict:
    res = project.run("status", "--json", env=env, check=True)
    return next(r for r in json.loads(res.stdout) if r["name"] == "livekit")


def doctor_check(project: Project, name: str = "livekit-server", **env: str) -> dict:
    res = project.run("doctor", "--json", env=env)
    assert "Traceback" not in res.stderr, res.stderr
    return {c["name"]: c for c in json.loads(res.stdout)}[name]


def test_auto_finds_the_binary_in_bin_var_then_path_then_state_dir(project, tmp_path):
    custom = write_fake_binary(tmp_path / "custom" / "my-livekit", tmp_path / "rec")
    on_path = write_fake_binary(project.path_bin / "livekit-server", tmp_path / "rec")
    in_state = write_fake_binary(project.home / "bin" / "livekit-server", tmp_path / "rec")

    row = livekit_row(project, LIVEKIT_SERVER_BIN=str(custom))
    assert (row["server"], row["server_path"]) == ("binary", str(custom))
    row = livekit_row(project, LIVEKIT_SERVER_BIN="custom/my-livekit")  # relative: the project
    assert row["server_path"] == str(custom)
    row = livekit_row(project)
    assert (row["server"], row["server_path"]) == ("binary", str(on_path))
    on_path.unlink()
    row = livekit_row(project)
    assert (row["server"], row["server_path"]) == ("binary", str(in_state))

    human = project.run("status", check=True, env={"COLUMNS": "200"}).stdout
    assert f"livekit: livekit-server binary {in_state}" in human
    check = doctor_check(project)
    assert check["status"] == "ok"
    assert check["detail"] == f"{in_state}: {FAKE_VERSION}"


def test_auto_without_a_binary_uses_the_embedded_server_and_doctor_warns(project):
    row = livekit_row(project)
    assert row["server"] == "embedded" and row["server_path"] is None
    assert row["state"] == "stopped"
    human = project.run("status", check=True, env={"COLUMNS": "200"}).stdout
    assert "livekit: embedded dev server" in human
    check = doctor_check(project)
    assert check["status"] == "warn"  # not a failure any more: the embedded server runs
    for limit in ("one machine", "audio only", "no simulcast", "no congestion control",
                  "development"):
        assert limit in check["detail"], check
    assert f"no livekit-server in PATH, {project.home / 'bin'}" in check["detail"]
    for fix in ("voicectl install livekit", "brew install livekit", "releases",
                "LIVEKIT_SERVER_BIN"):
        assert fix in check["fix"], check


def test_embedded_mode_ignores_an_installed_binary(project, tmp_path):
    write_fake_binary(project.path_bin / "livekit-server", tmp_path / "rec")
    row = livekit_row(project, LIVEKIT_SERVER="embedded")
    assert row["server"] == "embedded" and row["server_path"] is None
    check = doctor_check(project, LIVEKIT_SERVER="embedded")
    assert check["status"] == "warn" and "LIVEKIT_SERVER=embedded" in check["detail"]


def test_binary_mode_without_a_binary_fails_up_but_not_status_or_down(project):
    env = {"LIVEKIT_SERVER": "binary"}
    res = project.run("up", "livekit", env=env)
    assert res.returncode == 1
    line = res.stderr.strip()
    assert line.startswith("voicectl: error: livekit: LIVEKIT_SERVER=binary but no "
                           "livekit-server found") and "\n" not in line
    assert "voicectl install livekit" in line and "LIVEKIT_SERVER=embedded" in line
    row = livekit_row(project, **env)
    assert (row["server"], row["server_path"], row["state"]) == ("binary", None, "stopped")
    check = doctor_check(project, **env)
    assert check["status"] == "fail" and "voicectl install livekit" in check["fix"]
    assert "LIVEKIT_SERVER=embedded" in check["fix"]
    project.run("down", env=env, check=True)


def test_command_override_and_external_server_are_named(project, tmp_path):
    write_fake_binary(project.path_bin / "livekit-server", tmp_path / "rec")
    row = livekit_row(project, VOICECTL_LIVEKIT_CMD="/bin/true --x")
    assert (row["server"], row["server_path"]) == ("command", None)
    assert doctor_check(project, VOICECTL_LIVEKIT_CMD="/bin/true")["status"] == "warn"
    row = livekit_row(project, LIVEKIT_URL="wss://lk.invalid")
    assert row["server"] == "external" and row["external"] is True and row["ports"] == []
    check = doctor_check(project, LIVEKIT_URL="wss://lk.invalid")
    assert check["status"] == "ok" and "external server wss://lk.invalid" in check["detail"]


def _assert_no_secret_in_any_argv(project: Project, pid: int) -> None:
    record = json.loads((project.home / "run" / "livekit.json").read_text())
    assert SECRET not in " ".join(record["cmd"] + record["keeper_cmd"])
    tree = [psutil.Process(record["keeper_pid"]), psutil.Process(pid)]
    tree += psutil.Process(record["keeper_pid"]).children(recursive=True)
    for proc in tree:
        assert SECRET not in " ".join(proc.cmdline()), proc.cmdline()


def test_up_runs_the_binary_with_keys_in_its_environment_only(project, tmp_path):
    rec = tmp_path / "rec"
    binary = write_fake_binary(project.path_bin / "livekit-server", rec)
    res = project.run("up", "livekit", check=True, env={"COLUMNS": "300"})
    assert f"livekit: {binary} {FAKE_VERSION}" in res.stderr
    assert SECRET not in res.stdout + res.stderr

    assert Path(f"{rec}.keys").read_text() == f"{KEY}: {SECRET}"
    argv = Path(f"{rec}.argv").read_text().split("\n")
    assert argv[1:6] == ["--dev", "--bind", "127.0.0.1", "--port", str(project.lk_port)]
    assert SECRET not in " ".join(argv)
    row = livekit_row(project)
    assert row["state"] == "running" and row["server"] == "binary"
    assert row["server_path"] == str(binary)
    assert psutil.Process(row["pid"]).environ()["LIVEKIT_KEYS"] == f"{KEY}: {SECRET}"
    _assert_no_secret_in_any_argv(project, row["pid"])
    # the server accepts our key pair, which it got only through LIVEKIT_KEYS
    assert doctor_check(project, "livekit credentials")["status"] == "ok"


def test_up_runs_the_embedded_server_with_keys_in_its_environment(project):
    res = project.run("up", "livekit", check=True, timeout=120, env={"COLUMNS": "300"})
    assert "livekit: embedded dev server (no livekit-server binary found)" in res.stderr
    row = livekit_row(project)
    assert row["state"] == "running" and row["server"] == "embedded"
    proc = psutil.Process(row["pid"])
    assert proc.cmdline()[1:3] == ["-m", "voicectl.livekit_dev"]
    assert proc.environ()["LIVEKIT_KEYS"] == f"{KEY}: {SECRET}"
    _assert_no_secret_in_any_argv(project, row["pid"])
    assert doctor_check(project, "livekit credentials")["status"] == "ok"


