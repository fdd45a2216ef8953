"""Reply time with every circuit open: the validated fallback must come at once.

Both dependencies' breakers are opened by real failures (the LLM stub answers 500, Letta is
unreachable) with a long reset, then the brain's reply is timed directly: to its first text
(the fallback sentence) and to its end (which includes writing the `turn` event and queueing
the turn in the SQLite outbox). For information, the same through a text-only AgentSession.
Target: under 1 ms. Run: python -m tests.benchmarks.bench_agent_breaker
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request

from livekit.agents import llm

from agent.brain.brain import Brain
from agent.brain.runtime import AgentRuntime
from agent.brain.turn import FALLBACK
from agent.chat import start_text_session
from agent.resilience import OPEN, validate_reply
from tests.benchmarks.agent_common import bench_settings, ms, stub_process
from tests.benchmarks.common import median, percentile

RUNS = 2000
SESSION_RUNS = 200
TARGET_MS = 1.0


def _stub_fault(url: str, fault: str | None) -> None:
    req = urllib.request.Request(url.removesuffix("/v1") + "/_stub/control",
                                 data=json.dumps({"fault": fault}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()


async def run() -> int:
    with stub_process(0, 0) as url:
        settings = bench_settings(
            url, CIRCUIT_RESET_SECONDS="3600", RETRY_BASE_DELAY_SECONDS="0.01",
            HEALTH_PROBE_INTERVAL_SECONDS="3600",
        )
        runtime = AgentRuntime(settings, source="bench")
        runtime.start()
        _stub_fault(url, "500")
        brain = Brain(runtime)
        ctx = llm.ChatContext.empty()
        ctx.add_message(role="user", content="Hello?")
        for _ in range(10):  # real failures open both circuits
            async for _text in brain.reply(ctx):
                pass
            if all(runtime.breakers[d].state == OPEN for d in ("llm", "letta")):
                break
        assert all(runtime.breakers[d].state == OPEN for d in ("llm", "letta")), {
            d: b.state for d, b in runtime.breakers.items()}

        first: list[float] = []
        total: list[float] = []
        for i in range(RUNS + 50):
            started = time.perf_counter()
            parts = []
            async for text in brain.reply(ctx):
                if not parts:
                    t_first = time.perf_counter()
                parts.append(text)
            t_end = time.perf_counter()
            assert brain.last_turn.path == FALLBACK and validate_reply("".join(parts))
            if i >= 50:
                first.append(t_first - started)
                total.append(t_end - started)

        session, sbrain = await start_text_session(runtime)
        e2e: list[float] = []
        for _ in range(SESSION_RUNS):
            started = time.perf_counter()
            await session.run(user_input="Hello?")
            e2e.append(time.perf_counter() - started)
            assert sbrain.last_turn.path == FALLBACK
        await session.aclose()
        await runtime.aclose()

    rows = [("brain reply, first text", ms(first)), ("brain reply, complete", ms(total)),
            ("session.run() turn (info)", ms(e2e))]
    print(f"reply time with both circuits open ({RUNS} replies)")
    print(f"{'ms':<28} {'median':>8} {'p95':>8} {'p99':>8} {'max':>8}")
    for name, values in rows:
        print(f"{name:<28} {median(values):8.3f} {percentile(values, 95):8.3f} "
              f"{percentile(values, 99):8.3f} {max(values):8.3f}")
    ok = percentile(ms(total), 95) < TARGET_MS
    print(f"target: complete reply p95 < {TARGET_MS} ms -> {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def main() -> int:
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
