"""Which LiveKit server voicectl runs, decided without starting one: the embedded server's
service spec and the kind `status` names (the servers themselves: tests/test_livekit_choice.py)."""

from __future__ import annotations

import sys

from agent.config.loading import load_settings
from tests.support.ports import free_port
from voicectl.services.catalog import build_services
from voicectl.services.spec import child_env

KEY, SECRET = "key-under-test", "secret-under-test-0123456789abcdefXYZ"


def test_embedded_spec_passes_keys_in_env_not_argv(tmp_path):
    port = free_port()
    env = {"LIVEKIT_URL": f"ws://127.0.0.1:{port}", "LIVEKIT_SERVER": "embedded",
           "LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET,
           "VOICECTL_HOME": str(tmp_path / "h"), "LETTA_MODE": "external"}
    settings = load_settings(tmp_path / ".env", environ=env)
    spec = build_services(settings)["livekit"]
    assert spec.argv == [sys.executable, "-m", "voicectl.livekit_dev", "--bind", "127.0.0.1",
                         "--port", str(port)]
    assert spec.env == {"LIVEKIT_KEYS": f"{KEY}: {SECRET}"}
    assert child_env(settings, spec)["LIVEKIT_KEYS"] == f"{KEY}: {SECRET}"
    assert spec.server is not None and spec.server.kind == "embedded"
    assert spec.ports == [port]


def test_status_names_the_server_that_runs_not_the_one_configured_now():
    from voicectl.livekit.choice import LiveKitChoice, running_kind

    binary = LiveKitChoice("binary", "PATH", argv=["/x/livekit-server"], path="/x/livekit-server")
    embedded = LiveKitChoice("embedded", "no livekit-server binary found", argv=["py"])
    started_embedded = [sys.executable, "-m", "voicectl.livekit_dev", "--port", "7880"]
    assert running_kind(binary, started_embedded) == ("embedded", "")
    assert running_kind(binary, ["/x/livekit-server", "--dev"]) == ("binary", "/x/livekit-server")
    assert running_kind(embedded, ["/bin/sh", "/y/livekit-server", "--dev"]) == (
        "binary", "/y/livekit-server")
    assert running_kind(embedded, ["/opt/other-sfu"]) == ("command", "")
    assert running_kind(embedded, started_embedded) == ("embedded", "")
