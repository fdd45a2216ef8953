"""The embedded server's one hard requirement of the host: an interface other than loopback
(libwebrtc clients never use loopback). Checked in network namespaces made for the test."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.support.project import REPO, new_project

CHECK = "from voicectl.livekit_dev.hostnet import loopback_only_warning as w; print(w())"


def in_netns(script: str, *, veth: bool) -> subprocess.CompletedProcess:
    setup = "ip link set lo up"
    if veth:
        setup += ("; ip link add veth0 type veth peer name veth1 && ip addr add 198.18.0.1/24 "
                  "dev veth0 && ip link set veth0 up && ip link set veth1 up")
    return subprocess.run(["unshare", "-n", "sh", "-c", f"{setup}; {script}"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module", autouse=True)
def netns_possible() -> None:
    if shutil.which("unshare") is None or in_netns("true", veth=False).returncode != 0:
        pytest.fail("these tests need `unshare -n` (util-linux, as root)", pytrace=False)


def test_loopback_only_host_is_named_with_the_fix(tmp_path) -> None:
    alone = in_netns(f"{sys.executable} -c '{CHECK}'", veth=False)
    assert "no network interface but loopback" in alone.stdout, alone.stderr
    paired = in_netns(f"{sys.executable} -c '{CHECK}'", veth=True)
    assert paired.stdout.strip() == "None", paired.stderr

    proj = new_project(tmp_path)
    proj.write_env(LIVEKIT_SERVER="embedded", LETTA_MODE="external")
    cmd = " ".join(f"{k}='{v}'" for k, v in proj.env.items())
    res = in_netns(f"cd {tmp_path} && env {cmd} {sys.executable} -m voicectl.cli doctor --json",
                   veth=False)
    checks = {c["name"]: c for c in json.loads(res.stdout)}
    assert checks["webrtc network"]["status"] == "warn"
    assert "ip link add veth0" in checks["webrtc network"]["fix"]
    res = in_netns(f"cd {tmp_path} && env {cmd} {sys.executable} -m voicectl.cli doctor --json",
                   veth=True)
    assert "webrtc network" not in {c["name"] for c in json.loads(res.stdout)}
