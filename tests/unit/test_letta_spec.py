"""One definition of a voice-ready Letta agent (agent/memory/letta_agent_spec.py): `voicectl letta
create` and the agent's own first-use creation send Letta the same persona, human block, tags,
model handle and embedding config. Both real code paths run against recording fakes of
letta-client (the sync client of the CLI, the async one of the agent); no Letta needed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.clients.letta import LettaAccess
from agent.config.loading import load_settings
from agent.memory import letta_agent_spec as spec
from voicectl import cli
from voicectl.errors import VoicectlError
from voicectl.letta import agents as letta_agents

HANDLES = ["letta/letta-free", "openai/gpt-5-mini", "openai-proxy/gpt-5-mini",
           "openai/gpt-4o-mini", "ollama/llama3"]


class _SyncLetta:
    """letta_client.Letta as create_voice_agent uses it."""

    def __init__(self, handles: list[str], calls: list[dict]) -> None:
        self.models = SimpleNamespace(list=lambda: [SimpleNamespace(handle=h) for h in handles])
        self.agents = SimpleNamespace(create=self._create, retrieve=self._retrieve)
        self._calls = calls

    def _create(self, **kwargs: Any) -> Any:
        self._calls.append(kwargs)
        return SimpleNamespace(id="agent-1")

    def _retrieve(self, agent_id: str, include: Any = None) -> Any:
        return SimpleNamespace(id=agent_id, name=self._calls[-1]["name"])

    def close(self) -> None:
        pass


class _AsyncLetta:
    """letta_client.AsyncLetta as LettaAccess uses it."""

    def __init__(self, handles: list[str], calls: list[dict]) -> None:
        async def models_list(timeout: Any = None) -> list:
            return [SimpleNamespace(handle=h) for h in handles]

        async def create(**kwargs: Any) -> Any:
            calls.append(kwargs)
            return SimpleNamespace(id="agent-2")

        self.models = SimpleNamespace(list=models_list)
        self.agents = SimpleNamespace(create=create)


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"VOICECTL_HOME": str(tmp_path / "state"), "LETTA_SERVER_URL": "http://127.0.0.1:9",
            "OPENAI_API_KEY": "sk-test", **values}


def _via_cli(tmp_path: Path, monkeypatch, env: dict[str, str], handles: list[str]) -> dict:
    calls: list[dict] = []
    monkeypatch.setattr(letta_agents, "_client", lambda *a, **k: _SyncLetta(handles, calls))
    monkeypatch.chdir(tmp_path)
    for key in ("OPENAI_BASE_URL", "LOCAL_MODE", "LETTA_LLM_MODEL", "OLLAMA_URL"):
        monkeypatch.delenv(key, raising=False)
    result = CliRunner().invoke(cli.app, ["letta", "create", "voice", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == "agent-1"
    (call,) = calls
    return call


async def _via_agent(env: dict[str, str], handles: list[str], tmp_path: Path) -> dict:
    calls: list[dict] = []
    settings = load_settings(env_file=tmp_path / "absent.env", environ=env)
    access = LettaAccess(settings)
    assert await access._create_agent(_AsyncLetta(handles, calls), "voice", 5.0) == "agent-2"
    (call,) = calls
    call.pop("timeout")
    return call


@pytest.mark.parametrize("values", [
    {},  # OpenAI itself
    {"OPENAI_BASE_URL": "http://127.0.0.1:8399/v1/"},  # an OpenAI-compatible proxy
    {"OPENAI_BASE_URL": "https://api.openai.com/v1"},
    {"LETTA_LLM_MODEL": "letta/letta-free"},
    {"LETTA_LLM_MODEL": "llama3"},  # only some other provider offers it
    {"LOCAL_MODE": "true", "LOCAL_EMBEDDINGS_PORT": "18091"},  # local embeddings service
])
async def test_cli_and_agent_create_the_same_agent(tmp_path, monkeypatch, values) -> None:
    env = _env(tmp_path, **values)
    from_cli = _via_cli(tmp_path, monkeypatch, env, HANDLES)
    from_agent = await _via_agent(env, HANDLES, tmp_path)
    assert from_cli == from_agent
    blocks = {b["label"]: b["value"] for b in from_cli["memory_blocks"]}
    assert blocks == {"persona": spec.DEFAULT_PERSONA, "human": spec.DEFAULT_HUMAN}
    assert from_cli["tags"] == ["voicectl", "voice"] and from_cli["enable_sleeptime"] is True


@pytest.mark.parametrize(("model", "base", "handle"), [
    ("gpt-5-mini", None, "openai/gpt-5-mini"),
    ("gpt-5-mini", "https://api.openai.com/v1/", "openai/gpt-5-mini"),
    ("gpt-5-mini", "http://127.0.0.1:1/v1", "openai-proxy/gpt-5-mini"),
    ("gpt-4o-mini", "http://stub/v1", "openai/gpt-4o-mini"),
    ("llama3", None, "ollama/llama3"),
    ("letta/letta-free", None, "letta/letta-free"),
])
def test_one_model_handle_rule(model, base, handle) -> None:
    assert spec.pick_model_handle(model, HANDLES, base) == handle
    assert letta_agents.pick_model_handle(model, HANDLES, base) == handle


@pytest.mark.parametrize("model", ["gpt-9", "openai/gpt-9"])
async def test_a_model_letta_lacks_is_refused_on_both_paths(tmp_path, monkeypatch, model):
    env = _env(tmp_path, LETTA_LLM_MODEL=model)
    calls: list[dict] = []
    monkeypatch.setattr(letta_agents, "_client", lambda *a, **k: _SyncLetta(HANDLES, calls))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.app, ["letta", "create", "voice"], env=env)
    assert isinstance(result.exception, VoicectlError)  # main() prints it as one line
    assert "not offered by Letta" in str(result.exception)
    settings = load_settings(env_file=tmp_path / "absent.env", environ=env)
    with pytest.raises(spec.ModelHandleError, match="not offered by Letta"):
        await LettaAccess(settings)._create_agent(_AsyncLetta(HANDLES, calls), "voice", 5.0)
    assert calls == []  # nothing created with a guessed handle
