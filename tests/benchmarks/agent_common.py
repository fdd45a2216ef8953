"""Shared pieces of the agent benchmarks: a stub server process, a plain streaming client."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from agent.config import Settings
from agent.config.loading import load_settings
from tests.support.ports import free_port
from tests.support.project import REPO


@contextlib.contextmanager
def stub_process(ttft_ms: float, token_delay_ms: float) -> Iterator[str]:
    """The OpenAI stub in its own process (no GIL shared with the agent); yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_stub", "--port", str(port),
         "--ttft-ms", str(ttft_ms), "--token-delay-ms", str(token_delay_ms)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > end or proc.poll() is not None:
                    raise RuntimeError("stub did not start") from None
                time.sleep(0.05)
        yield url + "/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def bench_settings(llm_url: str, **env: str) -> Settings:
    """Settings for a benchmark: a scratch state dir, Letta unreachable (hybrid never waits)."""
    home = tempfile.mkdtemp(prefix="voicectl-bench-")
    atexit.register(shutil.rmtree, home, True)
    environ = {
        "VOICECTL_HOME": home,
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": llm_url,
        "LETTA_SERVER_URL": f"http://127.0.0.1:{free_port()}",
        "HEALTH_PROBE_INTERVAL_SECONDS": "5",
        **env,
    }
    return load_settings(env_file=Path(home) / "absent.env", environ=environ)


async def raw_ttft(session: aiohttp.ClientSession, base_url: str, messages: list[dict],
                   model: str = "gpt-5-mini") -> float:
    """Seconds from sending the request to the first non-empty content delta (plain SSE)."""
    body = {"model": model, "messages": messages, "stream": True}
    started = time.perf_counter()
    async with session.post(f"{base_url}/chat/completions", json=body,
                            headers={"Authorization": "Bearer sk-bench"}) as resp:
        resp.raise_for_status()
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                first = time.perf_counter() - started
                async for _ in resp.content:  # drain, like a client reading the reply
                    pass
                return first
    raise RuntimeError("no content in the stream")


def ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]
