"""Whether WebRTC clients can reach this machine's dev server at all.

libwebrtc (the Python rtc SDK, LiveKit's native SDKs, Chromium by default) never gathers
candidates on a loopback interface, so on a host whose only interface is ``lo`` (a container
with ``--network none``, some sandboxes) no peer connection to the dev server can form, even
though signaling works. Measured: in a network namespace with only ``lo`` the SDK times out
(``wait_pc_connection timed out``); with any other interface up, audio flows. Standard
library + psutil only: ``voicectl doctor`` imports it.
"""

from __future__ import annotations

import ipaddress
import socket

import psutil

LOOPBACK_ONLY_FIX = (
    "give the host a non-loopback interface (any address; traffic to it stays on the "
    "machine), e.g. `ip link add veth0 type veth peer name veth1 && ip addr add "
    "198.18.0.1/24 dev veth0 && ip link set veth0 up && ip link set veth1 up`, or run the "
    "real livekit-server"
)


def non_loopback_ipv4() -> list[str]:
    """IPv4 addresses of interfaces that are up and not loopback."""
    stats = psutil.net_if_stats()
    found = []
    for name, addrs in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        for addr in addrs:
            if addr.family == socket.AF_INET and not ipaddress.ip_address(addr.address).is_loopback:
                found.append(addr.address)
    return found


def loopback_only_warning() -> str | None:
    """Why media cannot flow here, or None when it can."""
    if non_loopback_ipv4():
        return None
    return ("this host has no network interface but loopback: WebRTC clients ignore "
            "loopback, so no audio can reach the dev server (signaling alone works)")
