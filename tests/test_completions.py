"""Completion scripts: generated from the Typer app, never stale, and working in bash."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.support.project import REPO

COMPLETIONS = REPO / "completions"


def test_committed_completions_are_current():
    res = subprocess.run([sys.executable, "scripts/gen_completions.py", "--check"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _bash_complete(*words: str) -> list[str]:
    line = " ".join(f'"{w}"' for w in words)
    script = (f"source {COMPLETIONS / 'voicectl.bash'}; COMP_WORDS=({line}); "
              f"COMP_CWORD={len(words) - 1}; _voicectl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_bash_completes_commands_services_and_options():
    assert "doctor" in _bash_complete("voicectl", "do")
    assert _bash_complete("voicectl", "st") == ["status"]
    assert _bash_complete("voicectl", "up", "le") == ["letta"]
    assert _bash_complete("voicectl", "up", "livekit", "ag") == ["agent"]
    assert _bash_complete("voicectl", "letta", "") == ["agents", "create", "--help"]
    assert "--json" in _bash_complete("voicectl", "status", "--")
    assert _bash_complete("voicectl", "hybrid", "o") == ["on", "off"]


@pytest.mark.parametrize(("shell", "name"), [("zsh", "_voicectl"), ("fish", "voicectl.fish")])
def test_other_shells_parse_their_script(shell, name):
    assert shutil.which(shell), f"{shell} is not installed: scripts/install_test_deps.sh adds it"
    res = subprocess.run([shell, "-n", str(COMPLETIONS / name)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
