"""`voicectl logs` through the real command line, in subprocesses: tail, --ttft --json, bad
input as one line, and --follow until interrupted (the views themselves: unit/test_logs.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.logs import (
    append,
    home_settings,
    keeper_line,
    log_home,
    turn,
    write_events,
    write_log,
)
from tests.support.project import base_env


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return log_home(tmp_path)


def voicectl(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voicectl.cli", "logs", *args],
                          capture_output=True, text=True, env=base_env(home),
                          cwd=home.parent, timeout=60, check=False)


def test_cli_logs_tail_ttft_and_bad_input(home, tmp_path):
    now = time.time()
    write_log(home, "agent", [keeper_line(now - 9 + i, "agent", f"l{i}") for i in range(9)])
    res = voicectl(home, "agent", "-n", "2")
    assert res.returncode == 0 and res.stdout.splitlines()[-1].endswith("l8")
    assert len(res.stdout.splitlines()) == 2
    events_path = home_settings(home, tmp_path).events_path
    write_events(events_path, [turn(now, "hybrid", 120.0)], ['garbage "event":"turn"'])
    res = voicectl(home, "--ttft", "--json")
    doc = json.loads(res.stdout)
    assert res.returncode == 0 and doc["stats"]["hybrid"]["p50"] == 120.0
    assert doc["skipped"] == 1
    for args, needle in ((["--grep", "["], "--grep"), (["--since", "3x"], "--since"),
                         (["nosuch"], "unknown service"), (["--ttft", "--circuit"], "exclude")):
        res = voicectl(home, *args)
        assert res.returncode == 2, (args, res.stderr)
        assert needle in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_cli_follow_until_interrupted(home):
    path = write_log(home, "agent", ["first"])
    proc = subprocess.Popen([sys.executable, "-m", "voicectl.cli", "logs", "-f", "agent"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=base_env(home), cwd=home.parent)
    try:
        assert proc.stdout.readline() == "first\n"
        append(path, "second")
        assert proc.stdout.readline() == "second\n"
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(10)
    assert proc.returncode in (0, 130)
