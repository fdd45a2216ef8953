"""Read-only commands write nothing: status, config, doctor, logs and metrics leave the
project directory and its state directory as they were, byte for byte, with no new entries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.project import Project


def _snapshot(root: Path) -> dict[str, object]:
    """Every directory and file under root (files with their bytes), symlinks as targets."""
    seen: dict[str, object] = {}
    for dirpath, _dirs, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        seen[rel + "/"] = None
        for name in filenames:
            path = Path(dirpath, name)
            seen[os.path.join(rel, name)] = (os.readlink(path) if path.is_symlink()
                                             else path.read_bytes())
    return seen


@pytest.fixture(params=["fresh", "existing"])
def project(request, make_project) -> Project:
    proj = make_project()
    proj.write_env(
        LIVEKIT_URL=f"ws://127.0.0.1:{free_port()}",
        LETTA_SERVER_URL=f"http://127.0.0.1:{free_port()}",  # loopback: managed Letta
        LETTA_PG_PORT=str(free_port()),
        AGENT_HTTP_PORT=str(free_port()),
        WEB_PORT=str(free_port()),
        METRICS_PORT=str(free_port()),
        LIVEKIT_SERVER="embedded",
    )
    if request.param == "existing":  # a state directory from earlier runs, with logs
        (proj.home / "logs").mkdir(parents=True)
        (proj.home / "logs" / "agent.log").write_text("hello\n")
        (proj.home / "events.jsonl").write_text(
            '{"ts":1763700000.5,"event":"turn","mode":"hybrid","path":"hybrid",'
            '"ttft_ms":12.5,"total_ms":30.0,"fallback":false}\n')
    return proj


@pytest.mark.parametrize("args", [
    ["status"],
    ["status", "--json"],
    ["config"],
    ["doctor", "--json"],
    ["logs", "-n", "5"],
    ["logs", "agent", "-n", "5"],
    ["logs", "--latency", "--json"],
    ["metrics"],
    ["hybrid", "status", "--json"],
    ["token", "room-1", "--identity", "alice"],
])
def test_read_only_command_writes_nothing(project, args) -> None:
    before = _snapshot(project.root)
    res = project.run(*args, timeout=60)
    assert "Traceback" not in res.stderr, res.stderr
    after = _snapshot(project.root)
    assert sorted(set(after) - set(before)) == [] and after == before, (args, res.stderr)


def test_logs_ttft_writes_only_its_documented_cache(project) -> None:
    """The summary index under .voicectl/cache/ is a cache (README): nothing else is written."""
    before = _snapshot(project.root)
    project.run("logs", "--ttft", "--json", check=True)
    after = _snapshot(project.root)
    new = {k for k in set(after) - set(before)}
    assert all(k.startswith(".voicectl/cache") for k in new), new
    assert {k: v for k, v in after.items() if k in before} == before
