"""Who holds a TCP port."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class PortHolder:
    port: int
    pid: int | None
    name: str

    def describe(self) -> str:
        if self.pid is None:
            return f"port {self.port} is in use by a process voicectl cannot see"
        return f"port {self.port} is held by pid {self.pid} ({self.name})"


def _bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def port_holder(port: int) -> PortHolder | None:
    """The process listening on a TCP port, or None when the port is free."""
    if _bindable(port):
        return None
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        conns = []
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                break
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            return PortHolder(port, conn.pid, name)
    return PortHolder(port, None, "?")
