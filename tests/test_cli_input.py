"""Bad input: one clear line, exit 2 (usage) or 1 (failed operation), never a traceback."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def project(make_project):
    return make_project()


def _one_line_error(res, code: int) -> str:
    assert res.returncode == code, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("voicectl: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["up", "nosuch"], {}, "unknown service 'nosuch'"),
        (["status"], {"AGENT_HTTP_PORT": "abc"}, "AGENT_HTTP_PORT='abc'"),
        (["status"], {"AGENT_HTTP_PORT": "70000"}, "not a TCP port"),
        (["status"], {"LIVEKIT_URL": "nonsense"}, "LIVEKIT_URL='nonsense'"),
        (["status"], {"USE_HYBRID_STREAMING": "maybe"}, "not true or false"),
        (["status"], {"LETTA_MODE": "cloudy"}, "LETTA_MODE"),
        (["status"], {"LIVEKIT_SERVER": "docker"}, "LIVEKIT_SERVER='docker' must be auto, "
         "binary or embedded"),
        (["status"], {"TURN_DETECTION": "semantic"}, "must be auto, vad or stt"),
        (["status"], {"ENDPOINTING_MIN_DELAY_SECONDS": "-1"}, "not a number of seconds"),
        (["status"], {"ENDPOINTING_MAX_DELAY_SECONDS": "soon"}, "not a number of seconds"),
        (["status"], {"ENDPOINTING_MIN_DELAY_SECONDS": "3", "ENDPOINTING_MAX_DELAY_SECONDS": "1"},
         "must not exceed"),
        (["--env-file", "missing.env", "status"], {}, "no such file"),
        (["up", "livekit"], {"VOICECTL_LIVEKIT_CMD": "'unclosed"}, "cannot be split"),
    ],
)
def test_bad_input_exits_2(project, args, env, needle):
    line = _one_line_error(project.run(*args, env=env), 2)
    assert needle in line


def test_missing_binary_is_one_line_exit_1(project):
    res = project.run("up", "livekit", env={"LIVEKIT_SERVER": "binary",
                                            "LIVEKIT_SERVER_BIN": "no-such-livekit-server",
                                            "LETTA_MODE": "external", "PATH": "/usr/bin:/bin"})
    line = _one_line_error(res, 1)
    assert "LIVEKIT_SERVER=binary but no livekit-server found" in line
    assert "LIVEKIT_SERVER_BIN 'no-such-livekit-server'" in line
    for fix in ("voicectl install livekit", "LIVEKIT_SERVER_BIN", "LIVEKIT_SERVER=embedded"):
        assert fix in line


def test_unknown_option_is_usage_error(project):
    res = project.run("status", "--bogus")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr


def test_config_shows_sources_and_masks_secrets(project):
    secret = "sk-this-is-a-very-secret-key-123456"
    (project.root / ".env").write_text(
        f"# my comment\nOPENAI_API_KEY={secret}\nLLM_MODEL=gpt-x\n"
    )
    res = project.run("config", "--json", env={"AGENT_NAME": "other-agent"})
    assert res.returncode == 0
    assert secret not in res.stdout and secret not in res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["OPENAI_API_KEY"]["source"] == ".env"
    assert rows["OPENAI_API_KEY"]["value"].endswith("(35 chars)")
    assert rows["LLM_MODEL"] == {**rows["LLM_MODEL"], "value": "gpt-x", "source": ".env"}
    assert rows["AGENT_NAME"]["value"] == "other-agent"
    assert rows["AGENT_NAME"]["source"] == "environment"
    assert rows["LIVEKIT_URL"]["source"] == "default"
    human = project.run("config", env={"AGENT_NAME": "other-agent"}).stdout
    assert secret not in human and "other-agent" in human


def test_config_explains_what_the_turn_settings_cost(project):
    rows = {r["name"]: r for r in json.loads(project.run("config", "--json").stdout)}
    assert rows["TURN_DETECTION"]["value"] == "auto"
    assert "up to 2.5 s" in rows["TURN_DETECTION"]["note"]
    assert rows["ENDPOINTING_MIN_DELAY_SECONDS"]["value"] == ""  # livekit-agents' own
    assert "0.1 s more silence before every reply" in rows["ENDPOINTING_MIN_DELAY_SECONDS"]["note"]


def test_config_explains_the_load_threshold(project):
    """0.7 by default, the limit livekit-server applies; config says why a higher value hides
    the problem; a value LiveKit cannot honour is one line, exit 2."""
    rows = {r["name"]: r for r in json.loads(project.run("config", "--json").stdout)}
    row = rows["AGENT_LOAD_THRESHOLD"]
    assert (row["value"], row["source"]) == (0.7, "default")
    assert "offers no job to a worker at load 0.7" in row["note"]
    assert "only hides the problem" in row["note"]
    human = project.run("config", env={"COLUMNS": "300"}).stdout
    assert "AGENT_LOAD_THRESHOLD: worker CPU load" in human and "only hides the problem" in human
    for bad in ("1.5", "0", "lots"):
        res = project.run("status", env={"AGENT_LOAD_THRESHOLD": bad})
        assert res.returncode == 2, res
        assert res.stderr.count("\n") == 1 and "AGENT_LOAD_THRESHOLD" in res.stderr, res.stderr


def test_env_file_option_selects_another_file(project):
    other = project.root / "prod.env"
    other.write_text("AGENT_NAME=from-prod\n")
    res = project.run("--env-file", str(other), "config", "--json")
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["AGENT_NAME"]["value"] == "from-prod"
    assert rows["AGENT_NAME"]["source"] == "prod.env"
