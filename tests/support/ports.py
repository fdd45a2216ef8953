"""Free TCP ports and URLs nothing listens on, for servers the tests start."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def dead_url(scheme: str = "http") -> str:
    """A URL on a port nothing listens on: connections are refused at once."""
    return f"{scheme}://127.0.0.1:{free_port()}"
