"""The agent's smaller parts that need no server: providers built from config, the outbox
file, the sender lease, a job's metadata (`voicectl chat` and the idle watchdog:
tests/test_agent_parts.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.config import ConfigError
from agent.memory.outbox import Outbox
from agent.memory.sync import SenderLease
from agent.providers import build_session_llm, build_stt, build_tts
from tests.support.agent import make_settings


def test_providers_are_built_from_config(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, llm_url="http://127.0.0.1:9/v1",
                             DEEPGRAM_API_KEY="dg", OPENAI_TTS_VOICE="alloy", TTS_MODEL="tts-1")
    stt = build_stt(settings)
    assert type(stt).__module__.startswith("livekit.plugins.deepgram")
    tts = build_tts(settings)
    assert type(tts).__module__.startswith("livekit.plugins.openai")
    assert tts._opts.voice == "alloy" and tts._opts.model == "tts-1"
    assert build_session_llm(settings).model == "gpt-5-mini"

    local = make_settings(tmp_path, llm_url="http://127.0.0.1:9/v1", STT_PROVIDER="openai",
                          STT_BASE_URL="http://127.0.0.1:7/v1", TTS_BASE_URL="http://127.0.0.1:8/v1")
    assert type(build_stt(local)).__module__.startswith("livekit.plugins.openai")
    assert "127.0.0.1:8" in str(build_tts(local)._client.base_url)

    with pytest.raises(ConfigError):
        build_stt(make_settings(tmp_path, llm_url="http://x/v1", STT_PROVIDER="nope"))
    with pytest.raises(ConfigError):
        build_tts(make_settings(tmp_path, llm_url="http://x/v1", TTS_PROVIDER="nope"))


def test_outbox_is_ordered_idempotent_and_durable(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    a = box.enqueue("one", "1", otid="t-a")
    b = box.enqueue("two", "2")
    assert box.enqueue("one again", "x", otid="t-a") == a  # same otid: no second row
    box.mark_attempt(box.oldest_pending().id)
    box.close()

    box = Outbox(path)  # a restart keeps everything, attempts included
    first = box.oldest_pending()
    assert (first.otid, first.user_text, first.attempts) == (a, "one", 1)
    box.mark_delivered(first.id)
    assert box.oldest_pending().otid == b and box.pending_count() == 1
    box.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 2


def test_one_sender_lease_per_state_dir(tmp_path: Path) -> None:
    first, second = SenderLease(tmp_path / "x.lock"), SenderLease(tmp_path / "x.lock")
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


def test_job_metadata_chooses_the_letta_agent():
    """The web console dispatches with {"letta_agent_id": ...}; other metadata changes nothing."""
    from agent import worker

    base = worker.settings.letta_agent_id
    assert worker.settings_for_job('{"letta_agent_id": "agent-123"}').letta_agent_id == "agent-123"
    assert worker.settings_for_job("").letta_agent_id == base
    assert worker.settings_for_job("not json").letta_agent_id == base
    assert worker.settings_for_job('["agent-1"]').letta_agent_id == base
    assert worker.settings_for_job('{"letta_agent_id": 5}').letta_agent_id == base
