"""Managed Letta: a real Letta 0.16.8 on embedded PostgreSQL, pointed at the OpenAI stub.

No Letta mocks: the session fixture `managed_letta` (tests/conftest.py) installs Letta once
into a cached venv and runs PostgreSQL and Letta as subprocesses the way the supervisor does.
The tests in the second half share one agent and run in file order; the restart test is last.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_stub import StubHandle
from tests.support.letta import TIMINGS, ManagedLetta
from voicectl.letta import agents as letta_agents
from voicectl.letta import health as letta_health
from voicectl.letta import install as letta_install
from voicectl.letta import postgres
from voicectl.letta import server as letta_server

pytestmark = pytest.mark.timeout(900)

EMBED = "text-embedding-3-small"


# ------------------------------------------------------------------ units (no server)


def test_socket_dir_short_and_fallback(tmp_path: Path) -> None:
    assert postgres.socket_dir(tmp_path) == tmp_path / "sock"
    deep = tmp_path / ("d" * 120)
    fallback = postgres.socket_dir(deep)
    assert len(str(fallback)) < 60 and fallback.name.startswith("voicectl-pg-")
    assert postgres.socket_dir(deep) == fallback  # stable


def test_postgres_argv_uri_and_user(tmp_path: Path) -> None:
    argv = postgres.server_argv(tmp_path, 9999)
    assert Path(argv[0]).name == "postgres" and Path(argv[0]).exists()
    assert argv[1:] == ["-D", str(tmp_path / "data"), "-p", "9999", "-k", str(tmp_path / "sock"),
                        "-h", "127.0.0.1"]
    assert postgres.uri(tmp_path, 9999) == (
        f"postgresql://letta@localhost/letta?host={tmp_path / 'sock'}&port=9999")
    expected = postgres.SYSTEM_USER if os.geteuid() == 0 else None
    assert postgres.run_as_user() == expected
    assert not postgres.is_ready(tmp_path, 9)  # nothing listens there


@pytest.mark.skipif(os.geteuid() != 0, reason="only root drops to the PostgreSQL user")
def test_unreachable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(postgres.PostgresSetupError, match="chmod o\\+x"):
        postgres.ensure_initialized(locked / "pg", 9999)


def test_server_env_isolates_home_and_openai(tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin", "PYTHONPATH": "/x", "VIRTUAL_ENV": "/v", "OPENAI_BASE_URL": "u",
            "KEEP": "1"}
    env = letta_server.server_env(tmp_path, "postgresql://p", "sk-1", "http://h/v1", base=base)
    paths = letta_server.letta_paths(tmp_path)
    assert env["HOME"] == str(paths.home) and env["LETTA_DIR"] == str(paths.home / ".letta")
    assert env["LETTA_PG_URI"] == "postgresql://p"
    assert env["OPENAI_API_KEY"] == "sk-1" and env["OPENAI_BASE_URL"] == "http://h/v1"
    assert "PYTHONPATH" not in env and "VIRTUAL_ENV" not in env and env["KEEP"] == "1"
    assert env["PATH"].startswith(str(paths.venv / "bin"))
    no_openai = letta_server.server_env(tmp_path, "postgresql://p", None, None, base=base)
    assert "OPENAI_BASE_URL" not in no_openai and "OPENAI_API_KEY" not in no_openai
    assert letta_server.server_cwd(tmp_path) == paths.workdir
    assert not paths.root.exists()  # building the spec writes nothing: up's prepare does
    paths.ensure()
    assert paths.workdir.is_dir() and paths.letta_dir.is_dir()
    argv = letta_server.server_argv(paths.venv, "127.0.0.1", 8283)
    assert argv[1:] == ["server", "--host", "127.0.0.1", "--port", "8283"]
    assert letta_health.health_url("http://h:1/") == "http://h:1/v1/health/"


def test_pick_model_handle() -> None:
    handles = ["letta/letta-free", "openai-proxy/gpt-5-mini", "openai/gpt-4o-mini"]
    pick = letta_agents.pick_model_handle
    assert pick("gpt-5-mini", handles, "http://127.0.0.1:1/v1") == "openai-proxy/gpt-5-mini"
    assert pick("gpt-4o-mini", handles, None) == "openai/gpt-4o-mini"
    assert pick("gpt-4o-mini", handles, "http://stub/v1") == "openai/gpt-4o-mini"
    assert pick("letta/letta-free", handles, None) == "letta/letta-free"
    with pytest.raises(letta_agents.LettaAgentError, match="not offered"):
        pick("gpt-9", handles, None)


def test_install_failure_reports_pip_tail(tmp_path: Path) -> None:
    with pytest.raises(letta_install.LettaSetupError, match="cannot run"):
        letta_install.install_letta(tmp_path / "venv", python=str(tmp_path / "no-python"))
    assert not letta_install.is_installed(tmp_path / "venv")


# ------------------------------------------------------------------ install, database, schema


def test_install_is_cached_and_idempotent(letta_venv: Path) -> None:
    assert letta_install.is_installed(letta_venv)
    assert letta_install.installed_version(letta_venv) == "0.16.8"
    started = time.monotonic()
    messages: list[str] = []
    assert letta_install.install_letta(letta_venv, messages.append) is False
    assert time.monotonic() - started < 1 and "already installed" in messages[0]


def test_postgres_running_as_unprivileged_user(managed_letta: ManagedLetta) -> None:
    pg_dir = managed_letta.paths.pg
    assert postgres.is_ready(pg_dir, managed_letta.pg_port)
    assert postgres.ensure_initialized(pg_dir, managed_letta.pg_port) is False
    assert postgres.ensure_database(pg_dir, managed_letta.pg_port) is False  # idempotent
    ext = postgres.psql(pg_dir, managed_letta.pg_port,
                        "SELECT extversion FROM pg_extension WHERE extname = 'vector'",
                        database="letta")
    assert ext == "0.6.2"
    owner = pwd.getpwuid(postgres.data_dir(pg_dir).stat().st_uid).pw_name
    assert owner == (postgres.run_as_user() or pwd.getpwuid(os.geteuid()).pw_name)
    tcp = postgres.psql(pg_dir, managed_letta.pg_port, "SHOW listen_addresses")
    assert tcp == "127.0.0.1"
    assert postgres.socket_dir(pg_dir).stat().st_mode & 0o777 == 0o700
    refused = subprocess.run(
        [str(postgres.bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(managed_letta.pg_port),
         "-U", "postgres", "-c", "SELECT 1"], capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "rejects connection" in refused.stderr


def test_schema_is_idempotent(managed_letta: ManagedLetta) -> None:
    log: list[str] = []
    letta_install.ensure_schema(managed_letta.venv, managed_letta.pg_uri, log.append,
                                home=managed_letta.paths.home)
    assert "(0 created)" in log[-1]
    defaults = postgres.psql(
        managed_letta.paths.pg, managed_letta.pg_port,
        "SELECT table_name || '.' || column_name || '=' || column_default "
        "FROM information_schema.columns WHERE (table_name, column_name) IN "
        "(('messages', 'sequence_id'), ('archives_agents', 'created_at')) ORDER BY 1",
        database="letta",
    ).splitlines()
    assert defaults == ["archives_agents.created_at=now()",
                        "messages.sequence_id=nextval('message_sequence_id_seq'::regclass)"]


# ------------------------------------------------------------------ the server


def test_health_endpoint(managed_letta: ManagedLetta) -> None:
    health = letta_health.check_health(managed_letta.base_url)
    assert health.ok and health.document == {"version": "0.16.8", "status": "ok"}
    assert health.detail == "letta 0.16.8 healthy"
    assert not letta_health.check_health("http://127.0.0.1:9").ok
    assert (managed_letta.paths.workdir / "openapi_letta.json").exists()
    assert managed_letta.paths.letta_dir.is_dir()


def test_models_listed_as_openai_proxy(managed_letta: ManagedLetta) -> None:
    handles = letta_agents.model_handles(managed_letta.base_url, None)
    assert "openai-proxy/gpt-5-mini" in handles and "openai-proxy/gpt-4o-mini" in handles
    with urllib.request.urlopen(managed_letta.base_url + "/v1/models/") as resp:
        assert resp.status == 200


@pytest.fixture(scope="module")
def agent(managed_letta: ManagedLetta) -> dict[str, Any]:
    started = time.monotonic()
    created = letta_agents.create_voice_agent(
        managed_letta.base_url, None, "voice-test", "gpt-5-mini", EMBED, None, 1536,
        managed_letta.stub.base_url,
    )
    TIMINGS["letta_create_agent_s"] = time.monotonic() - started
    return created


@pytest.fixture(scope="module")
def letta(managed_letta: ManagedLetta) -> Any:
    from letta_client import Letta

    client = Letta(base_url=managed_letta.base_url, api_key="local", timeout=60)
    yield client
    client.close()


def test_create_voice_agent(agent: dict[str, Any], managed_letta: ManagedLetta) -> None:
    assert agent["id"].startswith("agent-") and agent["name"] == "voice-test"
    assert agent["model"] == "openai-proxy/gpt-5-mini"
    assert agent["embedding"] == EMBED and agent["embedding_dim"] == 1536
    assert agent["sleeptime"] is True and agent["group_id"]
    assert set(agent["blocks"]) == {"persona", "human"}
    assert "voice" in agent["blocks"]["persona"]
    assert set(letta_agents.AGENT_TAGS) <= set(agent["tags"])


async def test_the_agents_first_use_creates_the_same_agent_as_the_cli(
    agent: dict[str, Any], managed_letta: ManagedLetta, tmp_path: Path
) -> None:
    """The worker's LettaAccess creates a missing agent from the same definition (round trip)."""
    from agent.clients.letta import LettaAccess, close_letta_clients
    from agent.config.loading import load_settings
    from agent.memory.letta_agent_spec import DEFAULT_PERSONA

    settings = load_settings(env_file=tmp_path / "absent.env", environ={
        "VOICECTL_HOME": str(tmp_path), "LETTA_SERVER_URL": managed_letta.base_url,
        "LETTA_AGENT_NAME": "voice-first-use", "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": managed_letta.stub.base_url, "LETTA_EMBEDDING_MODEL": EMBED})
    try:
        agent_id = await LettaAccess(settings).resolve_agent_id(timeout=60)
    finally:
        await close_letta_clients()
    made = letta_agents.find_agent(managed_letta.base_url, None, agent_id=agent_id)
    assert made is not None and made["name"] == "voice-first-use"
    assert made["blocks"] == agent["blocks"] and made["blocks"]["persona"] == DEFAULT_PERSONA
    same = ("model", "embedding", "embedding_dim", "sleeptime", "agent_type")
    assert {k: made[k] for k in same} == {k: agent[k] for k in same}
    assert sorted(made["tags"]) == sorted(agent["tags"])


def test_find_and_list_agents(agent: dict[str, Any], managed_letta: ManagedLetta) -> None:
    url = managed_letta.base_url
    assert letta_agents.find_agent(url, None, agent_id=agent["id"])["name"] == "voice-test"
    assert letta_agents.find_agent(url, None, name="voice-test")["id"] == agent["id"]
    assert letta_agents.find_agent(url, None, name="no-such-agent") is None
    assert letta_agents.find_agent(url, None, agent_id="agent-" + "0" * 8 + "-0000-4000-8000-"
                                   + "0" * 12) is None
    listed = letta_agents.list_agents(url, None)
    assert agent["id"] in [a["id"] for a in listed]
    everything = letta_agents.list_agents(url, None, include_sleeptime=True)
    companions = [a for a in everything if "sleeptime" in a["agent_type"]]
    assert companions and all(a["id"] not in [x["id"] for x in listed] for a in companions)


def test_send_message_gets_stub_reply(agent: dict[str, Any], letta: Any,
                                      letta_stub: StubHandle) -> None:
    letta_stub.clear_requests()
    started = time.monotonic()
    resp = letta.agents.messages.create(
        agent["id"], messages=[{"role": "user", "content": "Hello from the test"}])
    TIMINGS["letta_message_roundtrip_s"] = time.monotonic() - started
    replies = [m.content for m in resp.messages if m.message_type == "assistant_message"]
    assert replies == ["You said: Hello from the test."]
    assert resp.stop_reason.stop_reason == "end_turn"
    calls = letta_stub.requests("/v1/responses")  # gpt-5* goes through the Responses API
    assert calls and calls[0]["body"]["model"] == "gpt-5-mini"


def test_read_and_update_memory_block(agent: dict[str, Any], letta: Any) -> None:
    human = letta.agents.blocks.retrieve("human", agent_id=agent["id"])
    assert human.value.startswith("name: unknown")
    letta.agents.blocks.update("human", agent_id=agent["id"], value="name: Alice\nlikes: tea")
    assert letta.agents.blocks.retrieve("human", agent_id=agent["id"]).value.startswith(
        "name: Alice")
    labels = {b.label for b in letta.agents.blocks.list(agent["id"])}
    assert labels == {"persona", "human"}
    resp = letta.agents.messages.create(
        agent["id"], messages=[{"role": "user", "content": "What is my name?"}])
    assert [m.content for m in resp.messages if m.message_type == "assistant_message"] == [
        "Your name is Alice."]


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # messages.stream, 1.12
def test_stream_tokens(agent: dict[str, Any], letta: Any, letta_stub: StubHandle) -> None:
    letta_stub.control(token_delay_ms=20)
    try:
        started = time.monotonic()
        first: float | None = None
        pieces: list[str] = []
        kinds: list[str] = []
        for chunk in letta.agents.messages.stream(
            agent["id"], messages=[{"role": "user", "content": "stream this reply now"}],
            stream_tokens=True,
        ):
            kinds.append(chunk.message_type)
            if chunk.message_type == "assistant_message":
                first = first if first is not None else time.monotonic() - started
                pieces.append(chunk.content)
    finally:
        letta_stub.control(token_delay_ms=0)
    assert "".join(pieces) == "You said: stream this reply now."
    assert len(pieces) == 6  # token by token, not one block
    assert kinds[-2:] == ["stop_reason", "usage_statistics"]
    TIMINGS["letta_stream_first_token_s"] = first or 0.0


def test_create_with_streaming_true(agent: dict[str, Any], letta: Any) -> None:
    """letta-client 1.12's replacement for messages.stream: create(streaming=True)."""
    chunks = list(letta.agents.messages.create(
        agent["id"], messages=[{"role": "user", "content": "streamed via create"}],
        streaming=True, stream_tokens=True,
    ))
    pieces = [c.content for c in chunks if c.message_type == "assistant_message"]
    assert "".join(pieces) == "You said: streamed via create." and len(pieces) == 5


def test_chat_completions_model_agent(managed_letta: ManagedLetta, letta: Any,
                                      letta_stub: StubHandle) -> None:
    other = letta_agents.create_voice_agent(
        managed_letta.base_url, None, "voice-4o", "gpt-4o-mini", EMBED,
        letta_stub.base_url, 1536, letta_stub.base_url, enable_sleeptime=False,
    )
    assert other["model"] == "openai-proxy/gpt-4o-mini" and other["sleeptime"] is False
    letta_stub.clear_requests()
    resp = letta.agents.messages.create(other["id"], messages=[{"role": "user",
                                                                "content": "hi 4o"}])
    assert [m.content for m in resp.messages if m.message_type == "assistant_message"] == [
        "You said: hi 4o."]
    assert letta_stub.requests("/v1/chat/completions")


def test_archival_memory_uses_stub_embeddings(agent: dict[str, Any], letta: Any,
                                              letta_stub: StubHandle) -> None:
    letta_stub.clear_requests()
    letta.agents.passages.create(agent["id"], text="The user has a cat named Tom")
    found = letta.agents.passages.search(agent["id"], query="The user has a cat named Tom")
    assert any("Tom" in r.content for r in found.results)
    assert letta_stub.requests("/v1/embeddings")


def test_list_messages(agent: dict[str, Any], letta: Any) -> None:
    messages = list(letta.agents.messages.list(agent["id"], limit=100))
    users = [m.content for m in messages if m.message_type == "user_message"]
    assistants = [m.content for m in messages if m.message_type == "assistant_message"]
    assert users[:4] == ["Hello from the test", "What is my name?", "stream this reply now",
                         "streamed via create"]
    assert assistants[:4] == ["You said: Hello from the test.", "Your name is Alice.",
                              "You said: stream this reply now.",
                              "You said: streamed via create."]


def test_llm_failure_surfaces_and_agent_recovers(agent: dict[str, Any], letta: Any,
                                                 letta_stub: StubHandle) -> None:
    import letta_client

    letta_stub.control(fault="500")
    started = time.monotonic()
    try:
        with pytest.raises(letta_client.APIError) as info:
            letta.agents.messages.create(
                agent["id"], messages=[{"role": "user", "content": "are you there"}])
    finally:
        letta_stub.control(fault=None)
    TIMINGS["letta_llm_500_to_error_s"] = time.monotonic() - started
    assert getattr(info.value, "status_code", 500) >= 400
    resp = letta.agents.messages.create(
        agent["id"], messages=[{"role": "user", "content": "back again"}])
    assert [m.content for m in resp.messages if m.message_type == "assistant_message"] == [
        "You said: back again."]


def test_restart_keeps_agent_and_memory(agent: dict[str, Any], managed_letta: ManagedLetta,
                                        letta: Any) -> None:
    TIMINGS["letta_sigterm_stop_s"] = managed_letta.stop_letta()
    TIMINGS["postgres_sigint_stop_s"] = managed_letta.stop_postgres()
    assert not letta_health.check_health(managed_letta.base_url).ok
    assert not postgres.is_ready(managed_letta.paths.pg, managed_letta.pg_port)

    started = time.monotonic()
    managed_letta.start_postgres()
    TIMINGS["postgres_restart_to_ready_s"] = time.monotonic() - started
    TIMINGS["letta_restart_to_healthy_s"] = managed_letta.start_letta()

    found = letta_agents.find_agent(managed_letta.base_url, None, agent_id=agent["id"])
    assert found is not None and found["name"] == "voice-test"
    assert found["blocks"]["human"].startswith("name: Alice")
    history = [m.content for m in letta.agents.messages.list(agent["id"], limit=100)
               if m.message_type == "assistant_message"]
    assert "Your name is Alice." in history
    resp = letta.agents.messages.create(
        agent["id"], messages=[{"role": "user", "content": "What is my name?"}])
    assert [m.content for m in resp.messages if m.message_type == "assistant_message"] == [
        "Your name is Alice."]
