"""A local-mode voice stack for tests and benchmarks: `voicectl up` of a throw-away project
whose LiveKit is the embedded dev server, with the real worker, the llama.cpp `llm` service,
the embeddings service and a stand-in Letta (health only: turns wait in the memory outbox).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from tests.support.ports import free_port
from tests.support.project import Project, new_project, standin_cmd


def voice_project(root: Path, **extra: str) -> Project:
    """A project directory (free ports everywhere) ready for `voicectl up`."""
    # the dev server, like the real one, gives no job to a worker at CPU load >= 0.7; on a
    # 2-core machine running whisper and llama.cpp that drops dispatches at random, and the
    # voice tests are not about that (the load rule has its own test)
    proj = new_project(root, VOICECTL_DEV_TARGET_LOAD="1.0", HF_HUB_OFFLINE="1")
    letta = free_port()
    proj.write_env(
        LIVEKIT_URL=f"ws://127.0.0.1:{free_port()}",
        LIVEKIT_SERVER="auto",
        LIVEKIT_SERVER_BIN=str(root / "no-such-livekit-server"),
        LETTA_SERVER_URL=f"http://127.0.0.1:{letta}",
        VOICECTL_LETTA_CMD=standin_cmd(letta),
        LOCAL_MODE="true",
        LOCAL_LLM_PORT=str(free_port()),
        LOCAL_EMBEDDINGS_PORT=str(free_port()),
        AGENT_HTTP_PORT=str(free_port()),
        METRICS_PORT=str(free_port()),
        WEB_PORT=str(free_port()),
        # the highest the worker accepts in production mode: it declines at full CPU only
        AGENT_LOAD_THRESHOLD="1.0",
        REQUEST_TIMEOUT_SECONDS="30",
        **extra,
    )
    return proj


VOICE_SERVICES = ("livekit", "llm", "embeddings", "letta", "agent")


def project_settings(proj: Project):
    from agent.config.loading import load_settings

    return load_settings(env_file=proj.root / ".env", environ=proj.env)


def dev_state(proj: Project) -> dict:
    """The embedded dev server's /_dev/state."""
    url = project_settings(proj).livekit_http_url + "/_dev/state"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())
