"""Pid records: what voicectl started, stored so that a recycled pid is never taken for ours.

A record names the keeper (the small supervisor process of one service) and the service's
own process, each with its psutil create time, plus the command and ports. A process is
trusted as ours only when pid, create time and command line all match.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from agent.state_paths import StatePaths
from voicectl.supervise.states import KeeperState


@dataclass
class ServiceRecord:
    """The state of one supervised service, as its keeper last wrote it."""

    name: str
    keeper_pid: int = 0
    keeper_create_time: float = 0.0
    keeper_cmd: list[str] = field(default_factory=list)
    pid: int = 0
    create_time: float = 0.0
    cmd: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    started_at: float = 0.0
    supervised_since: float = 0.0
    restarts: int = 0
    state: KeeperState = KeeperState.STARTING
    reason: str = ""
    last_exit_code: int | None = None
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        self.state = KeeperState(self.state)  # read back from JSON as a plain string


def record_path(home: Path, name: str) -> Path:
    return StatePaths(home).record(name)


def write_record(home: Path, record: ServiceRecord) -> None:
    """Atomically replace the record file."""
    record.updated_at = time.time()
    path = record_path(home, record.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(record)))
    os.replace(tmp, path)


def read_record(home: Path, name: str) -> ServiceRecord | None:
    """The record of a service, or None when absent or unreadable."""
    try:
        data = json.loads(record_path(home, name).read_text())
        return ServiceRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def remove_record(home: Path, name: str) -> None:
    record_path(home, name).unlink(missing_ok=True)


def same_process(pid: int, create_time: float, cmd: list[str]) -> psutil.Process | None:
    """The process when pid, create time and command line all match the record, else None."""
    if pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > 0.05:
            return None
        if cmd and proc.cmdline() != cmd:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def identify(proc: psutil.Popen | psutil.Process) -> tuple[int, float, list[str]]:
    """pid, create time and command line of a live process, as records store them.

    Right after Popen the child may still be in exec, with an empty /proc cmdline: read it
    again for a moment, or the record would hold no command and never be checked by it.
    """
    deadline = time.monotonic() + 1.0
    while True:
        with proc.oneshot():
            pid, ctime, cmd = proc.pid, proc.create_time(), proc.cmdline()
        if cmd or time.monotonic() > deadline:
            return pid, ctime, cmd
        time.sleep(0.01)
