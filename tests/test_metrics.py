"""Prometheus metrics: real text-only turns, then `/metrics` read over HTTP from a real server.

The server is livekit-agents' own metrics server (the one the worker runs on METRICS_PORT):
in this process it serves the global registry; with PROMETHEUS_MULTIPROC_DIR set it sums the
files of every process, as in the worker. The OpenAI stub plays the LLM; Letta is refused.
No timing is asserted: only counts, states and that figures exist.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agent import metrics
from agent import resilience as r
from agent.config import Settings
from tests.fakes.openai_stub import StubHandle
from tests.support.agent import make_settings, text_agent
from tests.support.ports import dead_url
from tests.support.project import REPO
from voicectl.errors import VoicectlError
from voicectl.metrics_view import Sample, fetch, metrics_summary, normalize_url, parse

pytestmark = pytest.mark.timeout(90)


# --------------------------------------------------------------------------- fixtures


@pytest_asyncio.fixture(loop_scope="function")  # the test's own loop serves it
async def server() -> AsyncIterator[str]:
    """livekit-agents' metrics server on a free port; yields its /metrics URL."""
    from livekit.agents.telemetry.http_server import HttpServer

    srv = HttpServer("127.0.0.1", 0)
    await srv.start()
    try:
        yield f"http://127.0.0.1:{srv.port}/metrics"
    finally:
        await srv.aclose()


@pytest.fixture
def settings(tmp_path: Path, stub: StubHandle) -> Iterator[Settings]:
    """Settings for the stub, with the event-log listener installed for the test."""
    s = make_settings(tmp_path, llm_url=stub.base_url)
    metrics.install(s)
    try:
        yield s
    finally:
        metrics.uninstall()


async def scrape(url: str) -> list[Sample]:
    return parse(await asyncio.to_thread(fetch, url))


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    return sum(s.value for s in samples if s.name == name
               and all(s.labels.get(k) == v for k, v in labels.items()))


def delta(before: list[Sample], after: list[Sample], name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def wait_until(check: Callable[[], Any], timeout: float) -> Any:
    end = time.monotonic() + timeout
    while not (result := await check()):
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
    return result


# --------------------------------------------------------------------------- in one process


async def test_real_turns_move_turn_ttft_latency_and_backlog(
    settings: Settings, server: str
) -> None:
    before = await scrape(server)
    async with text_agent(settings) as agent:
        metrics.attach_session_metrics(agent.session, settings)
        during = await scrape(server)
        assert delta(before, during, "livekit_active_conversations") == 1
        for text in ("Hello there", "How are you", "Bye"):
            assert await agent.say(text) == f"You said: {text}."
        # Letta is refused: the turns wait in the outbox and the sender's failures show
        await wait_until(
            lambda: _moved(server, before, "voicectl_memory_sync_duration_ms_count",
                           result="failed"), 10.0)
        metrics.sample_outbox(agent.runtime.outbox)
        after = await scrape(server)
    closed = await scrape(server)

    turn = {"mode": "hybrid", "path": "hybrid"}
    assert delta(before, after, "livekit_conversation_turns_total", **turn, fallback="false") == 3
    assert delta(before, after, "voicectl_ttft_ms_count", **turn) == 3
    assert delta(before, after, "voicectl_turn_duration_ms_count", **turn) == 3
    assert delta(before, after, "voicectl_ttft_ms_bucket", **turn, le="+Inf") == 3
    # livekit-agents' own per-turn figure (ChatMessage.metrics llm_node_ttft)
    assert delta(before, after, "livekit_llm_duration_ms_count") == 3
    assert delta(before, after, "livekit_llm_duration_ms_sum") > 0
    assert value(after, "voicectl_memory_sync_backlog") == 3
    assert value(after, "voicectl_memory_sync_lag_seconds") > 0
    assert delta(before, closed, "livekit_active_conversations") == 0
    assert {value(after, "voicectl_circuit_state", dependency=d) for d in ("llm",)} == {0}


async def _moved(url: str, before: list[Sample], name: str, **labels: str) -> bool:
    return delta(before, await scrape(url), name, **labels) > 0


async def test_fault_counts_fallbacks_and_breaker_state_follows(
    settings: Settings, server: str, stub: StubHandle
) -> None:
    before = await scrape(server)
    async with text_agent(settings) as agent:
        stub.control(fault="500")  # every LLM call fails: the breaker opens
        assert await agent.say("Are you there") == r.fallback_sentence(r.SERVER_ERROR)
        opened = await scrape(server)
        assert value(opened, "voicectl_circuit_state", dependency="llm") == 2
        assert delta(before, opened, "voicectl_circuit_transitions_total", dependency="llm",
                     to="open") == 1
        # the LLM recovers: the health probe's trial closes the circuit, the gauge follows
        stub.control(fault=None)
        await wait_until(
            lambda: _state_is(server, "llm", 0), 10.0)
        assert await agent.say("Back again") == "You said: Back again."
        after = await scrape(server)

    assert delta(before, after, "livekit_conversation_turns_total", mode="hybrid",
                 path="fallback", fallback="true") == 1
    assert delta(before, after, "livekit_conversation_turns_total", mode="hybrid",
                 path="hybrid", fallback="false") == 1
    assert delta(before, after, "voicectl_fallbacks_total", reason=r.SERVER_ERROR,
                 stage="reply") == 1
    assert delta(before, after, "voicectl_fallbacks_total", reason=r.SERVER_ERROR,
                 stage="path") == 1  # hybrid -> letta
    assert delta(before, after, "voicectl_circuit_transitions_total", dependency="llm",
                 to="closed") == 1
    # the fallback reply has a time to first text too
    assert delta(before, after, "voicectl_ttft_ms_count", mode="hybrid", path="fallback") == 1


async def _state_is(url: str, dependency: str, state: int) -> bool:
    return value(await scrape(url), "voicectl_circuit_state", dependency=dependency) == state


async def test_usage_tokens_and_cost_at_configured_prices(
    tmp_path: Path, stub: StubHandle, server: str
) -> None:
    from livekit.agents import SessionUsageUpdatedEvent, llm
    from livekit.agents.metrics.usage import (
        AgentSessionUsage,
        LLMModelUsage,
        STTModelUsage,
        TTSModelUsage,
    )
    from livekit.agents.voice.events import ConversationItemAddedEvent

    s = make_settings(tmp_path, llm_url=stub.base_url, PRICE_LLM_INPUT_PER_MTOK="1",
                      PRICE_LLM_OUTPUT_PER_MTOK="2", PRICE_STT_PER_MINUTE="0.6",
                      PRICE_TTS_PER_MCHAR="10")
    metrics.install(s)
    try:
        before = await scrape(server)
        async with text_agent(s) as agent:
            metrics.attach_session_metrics(agent.session, s)

            def usage(tokens_in: int, tokens_out: int, audio: float, chars: int) -> Any:
                return SessionUsageUpdatedEvent(usage=AgentSessionUsage(model_usage=[
                    LLMModelUsage(provider="openai", model="m", input_tokens=tokens_in,
                                  output_tokens=tokens_out),
                    STTModelUsage(provider="deepgram", model="nova-3", audio_duration=audio),
                    TTSModelUsage(provider="openai", model="tts-1", characters_count=chars),
                ]))

            # session_usage_updated carries running totals: counters move by the growth
            agent.session.emit("session_usage_updated", usage(1000, 100, 30.0, 500))
            agent.session.emit("session_usage_updated", usage(3000, 400, 60.0, 2000))
            # per-turn figures of a spoken user turn (ChatMessage.metrics, seconds)
            item = llm.ChatMessage(role="user", content=["hi"], metrics={
                "transcription_delay": 0.2, "end_of_turn_delay": 0.5})
            agent.session.emit("conversation_item_added", ConversationItemAddedEvent(item=item))
            # tokens the brain reports on its turn event, priced the same way
            agent.runtime.emit("turn", mode="hybrid", path="hybrid", ttft_ms=1.0, total_ms=2.0,
                               fallback=False, prompt_tokens=500, completion_tokens=50)
        after = await scrape(server)
    finally:
        metrics.uninstall()

    assert delta(before, after, "livekit_llm_tokens_total", model="m", type="input") == 3000
    assert delta(before, after, "livekit_llm_tokens_total", model="m", type="output") == 400
    assert delta(before, after, "livekit_llm_tokens_total", model=s.llm_model,
                 type="input") == 500
    assert delta(before, after, "livekit_stt_audio_seconds_total", model="nova-3") == 60
    assert delta(before, after, "livekit_tts_characters_total", model="tts-1") == 2000
    llm_cost = (3500 * 1 + 450 * 2) / 1e6
    assert math.isclose(delta(before, after, "livekit_cost_usd_total", service="llm"), llm_cost)
    assert math.isclose(delta(before, after, "livekit_cost_usd_total", service="stt"), 0.6)
    assert math.isclose(delta(before, after, "livekit_cost_usd_total", service="tts"), 0.02)
    assert delta(before, after, "livekit_stt_duration_ms_count") == 1
    assert math.isclose(delta(before, after, "livekit_stt_duration_ms_sum"), 200)
    assert math.isclose(delta(before, after, "livekit_eou_delay_ms_sum"), 500)


async def test_voicectl_metrics_prints_a_summary_of_the_live_endpoint(
    settings: Settings, server: str
) -> None:
    from rich.console import Console

    from voicectl.render.metrics import metrics_report

    async with text_agent(settings) as agent:
        metrics.attach_session_metrics(agent.session, settings)
        await agent.say("Hello")
    doc = json.loads(json.dumps(await asyncio.to_thread(metrics_summary, settings, server)))
    assert doc["url"] == server
    assert doc["turns"]["total"] >= 1
    assert any(row["mode"] == "hybrid" and row["path"] == "hybrid" and row["count"] >= 1
               for row in doc["turns"]["by_mode_path"])
    assert doc["ttft_ms"]["hybrid"]["count"] >= 1
    assert doc["ttft_ms"]["hybrid"]["p50"] is not None
    assert doc["latency_ms"]["llm_ttft"]["count"] >= 1
    assert set(doc["circuits"]) >= {"llm", "letta", "preresponse"}
    assert {"backlog", "lag_seconds"} <= set(doc["memory_sync"])
    assert {"llm_input_tokens", "tts_characters", "stt_audio_seconds"} <= set(doc["usage"])
    assert "total" in doc["cost_usd"]

    console = Console(width=120, record=True, force_terminal=False)
    metrics_report(await asyncio.to_thread(metrics_summary, settings, server), console)
    text = console.export_text()
    for word in ("turns", "hybrid", "TTFT", "circuits", "llm", "memory sync", "cost"):
        assert word in text


def test_voicectl_metrics_unreachable_is_one_line(tmp_path: Path) -> None:
    s = make_settings(tmp_path, llm_url=dead_url())
    url = dead_url() + "/metrics"
    with pytest.raises(VoicectlError) as info:
        metrics_summary(s, url)
    assert info.value.code == 1
    assert "\n" not in str(info.value) and url in str(info.value)
    assert normalize_url("127.0.0.1:9100") == "http://127.0.0.1:9100/metrics"


# --------------------------------------------------------------------------- several processes

CHILD = """
import asyncio, os, sys
from pathlib import Path

home, url, turns, how = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
if how == "late":
    import livekit.agents  # noqa: F401  (imports prometheus_client first, as the worker's main)
from agent import metrics
from tests.support.agent import make_settings, text_agent

settings = make_settings(home, llm_url=url)
metrics.prepare_multiprocess(settings)
metrics.install(settings)


async def main() -> None:
    async with text_agent(settings, sync=False) as agent:
        metrics.attach_session_metrics(agent.session, settings)
        for i in range(turns):
            await agent.say(f"hello {i}")
        if how == "crash":
            os._exit(0)  # dies with its session still counted as active


asyncio.run(main())
"""


async def test_multiprocess_scrape_sums_every_process(
    tmp_path: Path, stub: StubHandle, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes run real turns; one scrape sums them; a crashed one is swept."""
    late_home = tmp_path / "late"
    shared = metrics.metrics_dir(make_settings(late_home, llm_url=stub.base_url))
    base = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROC_ENV}
    base["PYTHONPATH"] = str(REPO)
    jobs = [
        # like a job process: the directory is inherited from the parent
        (tmp_path / "job", 2, "crash", {**base, metrics.MULTIPROC_ENV: str(shared)}),
        # like the worker's main process: prometheus_client imported before the call
        (late_home, 3, "late", base),
    ]
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(home), stub.base_url, str(n), how],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for home, n, how, env in jobs
    ]
    for proc in procs:
        out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, out.decode()[-2000:]
    assert list(shared.glob("*.db"))

    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(shared))  # the server sums the files
    samples = await scrape(server)
    turn = {"mode": "hybrid", "path": "hybrid"}
    assert value(samples, "livekit_conversation_turns_total", **turn) == 5
    assert value(samples, "voicectl_ttft_ms_count", **turn) == 5
    assert value(samples, "livekit_llm_duration_ms_count") == 5
    assert value(samples, "voicectl_circuit_state", dependency="llm") == 0
    # the crashed process still counts as an active conversation until it is swept
    assert value(samples, "livekit_active_conversations") == 1
    assert len(metrics.sweep_dead_processes(shared)) == 2
    samples = await scrape(server)
    assert value(samples, "livekit_active_conversations") == 0
    assert value(samples, "livekit_conversation_turns_total", **turn) == 5  # counters stay


# --------------------------------------------------------------------------- the real worker


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[Any, Path, int]]:
    """`python -m agent start` against the LiveKit dev server; yields (it, state dir, port)."""
    from tests.support.livekit import start_dev_livekit
    from tests.support.ports import free_port
    from tests.support.worker import running_worker, worker_env

    fake = start_dev_livekit()
    home, port = tmp_path / "state", free_port()
    stale = home / "metrics" / "counter_999999999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over by an earlier run")
    env = worker_env(fake, home, tmp_path / "absent.env", METRICS_PORT=str(port),
                     **{metrics.MULTIPROC_ENV: None})
    try:
        with running_worker(env, tmp_path / "worker.log"):
            yield fake, home, port
    finally:
        fake.stop()


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.read().decode()
    except OSError:
        return None


async def test_worker_serves_metrics_of_all_its_processes(
    worker: tuple[Any, Path, int]
) -> None:
    from livekit import api

    fake, home, port = worker
    url = f"http://127.0.0.1:{port}/metrics"

    async def served() -> list[Sample] | None:
        text = await asyncio.to_thread(_get, url)
        samples = parse(text) if text else []
        # the main process's sampler has written once the worker registered
        return samples if any(s.name == "voicectl_memory_sync_backlog" for s in samples) else None

    async def registered() -> bool:
        log = home / "events.jsonl"
        return log.exists() and '"event":"worker"' in log.read_text()

    await wait_until(registered, 60.0)
    samples = await wait_until(served, 15.0)  # served from before registration
    assert not (home / "metrics" / "counter_999999999.db").exists()  # emptied at start
    assert any(s.name.startswith("lk_agents_") for s in samples)  # livekit-agents' own
    assert value(samples, "voicectl_circuit_state", dependency="letta") in (0, 1, 2)

    room = f"room-{uuid.uuid4().hex[:8]}"
    async with api.LiveKitAPI(fake.http_url, fake.api_key, fake.api_secret) as lk:
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name="letta-voice-agent", room=room))

    # accepted in the main process; the job process joins the room and starts its session:
    # its live conversation gauge is summed into the same scrape
    async def counted() -> list[Sample] | None:
        s = parse(await asyncio.to_thread(_get, url) or "")
        done = (value(s, "voicectl_jobs_total", result="accepted") == 1
                and value(s, "livekit_active_conversations") == 1)
        return s if done else None

    samples = await wait_until(counted, 45.0)
    assert not value(samples, "voicectl_startup_failures_total", stage="connect")

